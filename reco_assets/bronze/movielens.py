"""Landing MovieLens as it came: resolve the source, fetch it safely, verify it, write a manifest.

Pure Python with no Dagster in it, so every refusal can be unit-tested.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from pyarrow import fs

from reco_assets.lakehouse import storage
from reco_assets.lakehouse.tables import MOVIELENS_FILES
from reco_assets.lakehouse.tables import MOVIELENS_MANIFEST as MANIFEST_NAME

BUNDLED_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "movielens" / "ml-latest-small"
GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
GROUPLENS_DATASETS = ("ml-latest-small", "ml-25m", "ml-32m")

LANDED_PREFIX = "landed-"
# A landing folder that started this long ago and that no manifest names is a leftover of a failed or killed run.
STALE_LANDING = timedelta(hours=6)
MAX_UNCOMPRESSED_BYTES = 8 * 1024**3
CHUNK = 1024 * 1024

Log = Callable[[str], None]


class MovieLensError(Exception):
    """The source cannot be landed; the message names the problem."""


def resolve_source(source: str) -> tuple[str, str]:
    """Return (kind, location) with kind in {"dir", "zip", "url"}."""
    if source == "bundled":
        return "dir", str(BUNDLED_SAMPLE)
    if source in GROUPLENS_DATASETS:
        base = os.environ.get("MOVIELENS_BASE_URL", GROUPLENS_BASE_URL).rstrip("/")
        return "url", f"{base}/{source}.zip"
    if source.startswith(("http://", "https://")):
        return "url", source
    path = Path(source).expanduser()
    if path.is_dir():
        return "dir", str(path.resolve())
    if path.is_file() and path.suffix == ".zip":
        return "zip", str(path.resolve())
    raise MovieLensError(
        f"MovieLens source {source!r} is neither 'bundled', one of {', '.join(GROUPLENS_DATASETS)}, "
        "an http(s) URL, an existing directory nor a .zip file"
    )


def land(source: str, target: Path, downloads: Path, log: Log) -> dict:
    """Put the MovieLens files of `source` into the empty directory `target` and return its manifest."""
    kind, location = resolve_source(source)
    target.mkdir(parents=True, exist_ok=True)
    source_info: dict = {"requested": source, "kind": kind, "location": location}
    if kind == "url":
        archive, md5 = download(location, downloads, log)
        source_info["md5"] = md5
        extract_zip(archive, target)
    elif kind == "zip":
        extract_zip(Path(location), target)
    else:
        copy_dir(Path(location), target)
    validate(target)
    manifest = build_manifest(target, source_info)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    log(f"landed {len(manifest['files'])} files, {manifest['total_bytes']:,} bytes from {location}")
    return manifest


def copy_dir(src: Path, target: Path) -> None:
    for item in sorted(src.iterdir()):
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, target / item.name)


def _fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(4096).decode("utf-8", errors="replace")


def published_md5(url: str) -> str:
    """The checksum GroupLens publishes beside each archive as `<archive>.md5`."""
    md5_url = f"{url}.md5"
    try:
        text = _fetch_text(md5_url)
    except (urllib.error.URLError, OSError) as exc:
        raise MovieLensError(f"cannot fetch the published checksum {md5_url}: {exc}") from exc
    match = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not match:
        raise MovieLensError(f"{md5_url} holds no MD5 checksum: {text[:80]!r}")
    return match.group(1).lower()


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, downloads: Path, log: Log) -> tuple[Path, str]:
    """Stream `url` into the download cache and verify it against the published MD5."""
    expected = published_md5(url)
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / PurePosixPath(urllib.parse.urlparse(url).path).name
    if archive.exists() and file_digest(archive, "md5") == expected:
        log(f"using cached {archive} (md5 {expected} matches)")
        return archive, expected
    partial = archive.with_name(archive.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report, started = 0, 0.0, time.monotonic()
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() >= next_report:
                    share = f" ({done / total:.0%} of {total:,})" if total else ""
                    log(f"downloading {url}: {done:,} bytes{share}")
                    next_report = time.monotonic() + 5
        log(f"downloaded {done:,} bytes in {time.monotonic() - started:.1f}s")
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise MovieLensError(f"download of {url} failed: {exc}") from exc
    actual = digest.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise MovieLensError(f"checksum mismatch for {url}: published md5 {expected}, downloaded file has {actual}")
    partial.replace(archive)
    return archive, expected


def _member_target(name: str, strip: str, target: Path) -> Path | None:
    """Where an archive member lands, or an error if it would escape `target`."""
    posix = PurePosixPath(name)
    if not posix.parts:
        raise MovieLensError(f"archive member {name!r} names no file or folder: refused")
    if posix.is_absolute() or ".." in posix.parts or "\\" in name or ":" in posix.parts[0]:
        raise MovieLensError(f"archive member {name!r} would escape the target folder: refused")
    parts = posix.parts[1:] if strip and posix.parts[0] == strip else posix.parts
    if not parts:
        return None
    dest = (target / PurePosixPath(*parts)).resolve()
    if not dest.is_relative_to(target.resolve()):
        raise MovieLensError(f"archive member {name!r} would escape the target folder: refused")
    return dest


def extract_zip(archive: Path, target: Path) -> None:
    """Extract a MovieLens archive, refusing corrupt archives and members that escape `target`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if not members:
                raise MovieLensError(f"{archive} is an empty archive")
            for member in members:
                _member_target(member.filename, "", target)  # every name is checked before any is used
            tops = {PurePosixPath(m.filename).parts[0] for m in members}
            strip = tops.pop() if len(tops) == 1 and any(m.is_dir() or "/" in m.filename for m in members) else ""
            if sum(m.file_size for m in members) > MAX_UNCOMPRESSED_BYTES:
                raise MovieLensError(f"{archive} expands to more than {MAX_UNCOMPRESSED_BYTES:,} bytes: refused")
            planned = []
            for member in members:
                dest = _member_target(member.filename, strip, target)
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise MovieLensError(f"archive member {member.filename!r} is a symbolic link: refused")
                if dest is not None and not member.is_dir():
                    planned.append((member, dest))
            for member, dest in planned:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as exc:
        raise MovieLensError(f"{archive.name} is not a valid zip archive: {exc}") from exc


def read_header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        return handle.readline().rstrip("\r\n").split(",")


def validate(target: Path) -> None:
    """Every expected file is there, with its exact header."""
    missing = [name for name in MOVIELENS_FILES if not (target / name).is_file()]
    if missing:
        found = sorted(p.name for p in target.iterdir())
        raise MovieLensError(f"missing file(s) {', '.join(missing)}; the source holds {found}")
    for name, expected in MOVIELENS_FILES.items():
        header = read_header(target / name)
        if header != expected:
            raise MovieLensError(f"{name} has header {','.join(header)!r}, expected {','.join(expected)!r}")


def count_rows(path: Path) -> int:
    """Data rows of a CSV file (lines after the header)."""
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def build_manifest(target: Path, source_info: dict) -> dict:
    files = []
    for path in sorted(p for p in target.iterdir() if p.is_file() and p.name != MANIFEST_NAME):
        entry = {"name": path.name, "bytes": path.stat().st_size, "sha256": file_digest(path, "sha256")}
        if path.suffix == ".csv":
            entry["rows"] = count_rows(path)
        files.append(entry)
    return {
        "source": source_info,
        "landed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
    }


def landed_name(now: datetime | None = None) -> str:
    """A new landing's folder name; it starts with the landing time, which is how old copies are aged."""
    return f"{LANDED_PREFIX}{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def landed_at(name: str) -> datetime | None:
    try:
        return datetime.strptime(name[len(LANDED_PREFIX):][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def upload(landed: Path, target: str) -> None:
    """Copy a folder landed on local disk to `target` on the lakehouse's object storage."""
    filesystem, path = storage.filesystem(target)
    fs.copy_files(str(landed), path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def publish(bronze_dir: str, landed: str, manifest: dict) -> None:
    """Make the folder `landed` of bronze_dir the current copy: one atomic replace of the published manifest, which
    names it (a rename on local disk, one PUT on S3). The copy it replaces stays, for readers that opened it
    mid-way, until the next publish; other folders are removed once their landing started `STALE_LANDING` ago (a
    landing of another run still in progress is younger)."""
    filesystem, folder = storage.filesystem(bronze_dir)
    target = storage.join(folder, MANIFEST_NAME)
    try:
        with filesystem.open_input_stream(target) as stream:
            previous = json.loads(stream.read()).get("folder")
    except (OSError, ValueError):  # none published yet (or unreadable): nothing to keep for readers
        previous = None
    published = json.dumps({**manifest, "folder": landed}, indent=2).encode()
    local = isinstance(filesystem, fs.LocalFileSystem)
    written = storage.join(folder, f".{MANIFEST_NAME}.{landed}") if local else target
    with filesystem.open_output_stream(written) as out:
        out.write(published)
    if local:
        os.replace(written, target)
    cutoff = datetime.now(UTC) - STALE_LANDING
    for entry in filesystem.get_file_info(fs.FileSelector(folder)):
        if entry.type == fs.FileType.Directory and entry.base_name not in (landed, previous) \
                and (at := landed_at(entry.base_name)) is not None and at < cutoff:
            filesystem.delete_dir(entry.path)
