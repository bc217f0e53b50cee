"""Bronze: MovieLens files exactly as they came, with a manifest."""

import time

import dagster as dg
from pydantic import Field

from reco_assets.bronze import movielens
from reco_assets.resources import LakehouseResource


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
    """MovieLens CSV files as published, with `_manifest.json` (source, sizes, sha256, row counts)."""
    started = time.monotonic()
    final = lakehouse.table_path("bronze", "movielens")
    try:
        with lakehouse.staged_dir(final) as staged:
            manifest = movielens.land(config.source, staged, lakehouse.downloads, context.log.info)
    except movielens.MovieLensError as exc:
        raise dg.Failure(
            description=f"MovieLens source refused: {exc}. The previous bronze copy (if any) is unchanged."
        ) from exc
    rows = {f["name"].removesuffix(".csv"): f["rows"] for f in manifest["files"] if "rows" in f}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(final)),
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
