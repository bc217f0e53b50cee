"""Bronze: MovieLens files exactly as they came, with a manifest."""

import shutil
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from reco_assets.bronze import movielens
from reco_assets.lakehouse import LakehouseResource, storage


class MovieLensSourceConfig(dg.Config):
    source: str = Field(
        default="bundled",
        description=(
            "'bundled' (the ml-latest-small sample shipped with the project), a GroupLens dataset name "
            "(ml-latest-small, ml-25m, ml-32m), an http(s) URL of a MovieLens .zip, or a local directory or .zip"
        ),
    )


@dg.asset(group_name="bronze", kinds={"python", "csv"})
def bronze_movielens(
    context: dg.AssetExecutionContext, config: MovieLensSourceConfig, lakehouse: LakehouseResource
) -> dg.MaterializeResult:
    """MovieLens CSV files as published, with `_manifest.json` (source, sizes, sha256, row counts).

    Each landing gets a folder of its own; publishing it is one atomic replace of the manifest, so a failed or
    killed landing never touches the current copy.
    """
    started = time.monotonic()
    final = lakehouse.movielens_dir
    name = movielens.landed_name()
    # Landed straight into the lakehouse on local disk; on S3, landed and verified locally, then uploaded.
    on_s3 = storage.on_s3(final)
    landed = (lakehouse.downloads / "landing" if on_s3 else Path(final)) / name
    try:
        manifest = movielens.land(config.source, landed, lakehouse.downloads, context.log.info)
        if on_s3:
            movielens.upload(landed, storage.join(final, name))
    except movielens.MovieLensError as exc:
        shutil.rmtree(landed, ignore_errors=True)
        raise dg.Failure(
            description=f"MovieLens source refused: {exc}. The previous bronze copy (if any) is unchanged."
        ) from exc
    finally:
        if on_s3:
            shutil.rmtree(landed, ignore_errors=True)
    movielens.publish(final, name, manifest)
    lakehouse.refresh_catalog(context.log)  # the bronze.movielens_* views read the folder just published
    rows = {f["name"].removesuffix(".csv"): f["rows"] for f in manifest["files"] if "rows" in f}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(storage.join(final, name)),
            "source": manifest["source"]["location"],
            "total_bytes": manifest["total_bytes"],
            **{f"rows_{name}": dg.MetadataValue.int(n) for name, n in rows.items()},
            "files": dg.MetadataValue.md(
                "| file | bytes | rows | sha256 |\n|---|---:|---:|---|\n"
                + "\n".join(
                    f"| {f['name']} | {f['bytes']:,} | {f.get('rows', '')} | `{f['sha256'][:16]}…` |"
                    for f in manifest["files"]
                )
            ),
            "seconds": round(time.monotonic() - started, 2),
        }
    )
