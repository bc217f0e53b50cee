"""Landing MovieLens: sources, checksums, archive safety and header checks (pure Python)."""

import hashlib
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reco_assets.bronze import movielens
from reco_assets.bronze.movielens import BUNDLED_SAMPLE, MovieLensError

TINY = {
    "movies.csv": 'movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,"Matrix, The (1999)",Action\n',
    "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,5.0,964982704\n2,1,3.5,964982705\n",
    "tags.csv": "userId,movieId,tag,timestamp\n1,1,pixar,964982703\n",
    "links.csv": "movieId,imdbId,tmdbId\n1,0114709,862\n2,0133093,603\n",
    "README.txt": "licence text\n",
}


def make_zip(path: Path, files: dict[str, str | bytes], prefix: str = "ml-tiny/") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(prefix + name, content)
    return path


def publish(www: Path, name: str, files: dict, md5: str | None = None) -> None:
    archive = make_zip(www / name, files)
    digest = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    (www / f"{name}.md5").write_text(f"{digest}  {name}\n")


def land(source: str, tmp_path: Path) -> tuple[dict, Path]:
    target = tmp_path / "landed"
    return movielens.land(source, target, tmp_path / "downloads", lambda msg: None), target


def test_bundled_sample_lands_with_manifest(tmp_path):
    manifest, target = land("bundled", tmp_path)
    files = {f["name"]: f for f in manifest["files"]}
    assert files["ratings.csv"]["rows"] == 100836
    assert files["movies.csv"]["rows"] == 9742
    assert "README.txt" in files, "the GroupLens licence travels with every copy"
    sha = hashlib.sha256((BUNDLED_SAMPLE / "ratings.csv").read_bytes()).hexdigest()
    assert files["ratings.csv"]["sha256"] == sha
    assert json.loads((target / "_manifest.json").read_text()) == manifest


def test_local_zip_and_directory(tmp_path):
    archive = make_zip(tmp_path / "ml-tiny.zip", TINY)
    manifest, target = land(str(archive), tmp_path)
    assert {f["name"]: f.get("rows") for f in manifest["files"]}["ratings.csv"] == 3
    assert (target / "movies.csv").read_text() == TINY["movies.csv"]
    manifest2, _ = land(str(target), tmp_path / "again")
    assert manifest2["source"]["kind"] == "dir"


def test_url_download_verifies_published_md5(tmp_path, http_server, monkeypatch):
    www, base = http_server
    publish(www, "ml-latest-small.zip", TINY)
    monkeypatch.setenv("MOVIELENS_BASE_URL", base)
    manifest, target = land("ml-latest-small", tmp_path)
    assert manifest["source"]["location"] == f"{base}/ml-latest-small.zip"
    assert manifest["source"]["md5"] == hashlib.md5((www / "ml-latest-small.zip").read_bytes()).hexdigest()
    assert (target / "ratings.csv").read_text() == TINY["ratings.csv"]
    assert (tmp_path / "downloads" / "ml-latest-small.zip").exists(), "download is cached"


def test_url_with_wrong_checksum_is_refused(tmp_path, http_server):
    www, base = http_server
    publish(www, "ml-25m.zip", TINY, md5="0" * 32)
    with pytest.raises(MovieLensError, match="checksum mismatch.*published md5 0{32}"):
        land(f"{base}/ml-25m.zip", tmp_path)
    assert not (tmp_path / "downloads" / "ml-25m.zip").exists(), "a bad download is not cached"


def test_url_without_published_checksum_is_refused(tmp_path, http_server):
    www, base = http_server
    make_zip(www / "ml-32m.zip", TINY)
    with pytest.raises(MovieLensError, match=r"cannot fetch the published checksum .*ml-32m\.zip\.md5"):
        land(f"{base}/ml-32m.zip", tmp_path)


def test_member_escaping_target_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in TINY.items():
            zf.writestr(f"ml-tiny/{name}", content)
        zf.writestr("../../evil", "owned")
    with pytest.raises(MovieLensError, match=r"'../../evil' would escape the target folder"):
        land(str(archive), tmp_path)
    assert not (tmp_path.parent / "evil").exists()
    assert not (tmp_path / "landed" / "movies.csv").exists(), "nothing is extracted from a refused archive"


def test_absolute_member_is_refused(tmp_path):
    archive = tmp_path / "abs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("/etc/evil", "owned")
    with pytest.raises(MovieLensError, match="would escape"):
        land(str(archive), tmp_path)


@pytest.mark.parametrize("name", ["./", ".", "/"])
def test_member_naming_no_file_is_refused_by_name(tmp_path, name):
    archive = tmp_path / "dot.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for member, content in TINY.items():
            zf.writestr(f"ml-tiny/{member}", content)
        zf.writestr(name, "")
    with pytest.raises(MovieLensError, match=rf"archive member '{re.escape(name)}' (names no file|would escape)"):
        land(str(archive), tmp_path)
    assert not (tmp_path / "landed" / "movies.csv").exists()


def test_corrupt_archive_is_refused(tmp_path):
    archive = make_zip(tmp_path / "corrupt.zip", TINY)
    data = bytearray(archive.read_bytes())
    archive.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(MovieLensError, match="corrupt.zip is not a valid zip archive"):
        land(str(archive), tmp_path)


def test_bad_crc_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, content in TINY.items():
            zf.writestr(f"ml-tiny/{name}", content)
    data = buffer.getvalue().replace(b"Toy Story", b"Toy Storm")
    archive = tmp_path / "crc.zip"
    archive.write_bytes(data)
    with pytest.raises(MovieLensError, match="not a valid zip archive.*Bad CRC"):
        land(str(archive), tmp_path)


def test_missing_file_is_named(tmp_path):
    files = {k: v for k, v in TINY.items() if k != "links.csv"}
    with pytest.raises(MovieLensError, match=r"missing file\(s\) links.csv"):
        land(str(make_zip(tmp_path / "ml.zip", files)), tmp_path)


def test_wrong_header_is_named(tmp_path):
    files = {**TINY, "ratings.csv": "user,movie,rating,ts\n1,1,4.0,1\n"}
    with pytest.raises(
        MovieLensError,
        match=r"ratings.csv has header 'user,movie,rating,ts', expected 'userId,movieId,rating,timestamp'",
    ):
        land(str(make_zip(tmp_path / "ml.zip", files)), tmp_path)


def test_unknown_source_is_explained(tmp_path):
    with pytest.raises(MovieLensError, match="neither 'bundled'"):
        land(str(tmp_path / "nope"), tmp_path)


def test_count_rows_without_trailing_newline(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n3,4")
    assert movielens.count_rows(path) == 2


def test_publish_on_local_disk_replaces_the_manifest_and_keeps_what_readers_may_hold(tmp_path):
    bronze = tmp_path / "movielens"
    names = {age: movielens.landed_name(datetime.now(UTC) - age)
             for age in (movielens.STALE_LANDING + timedelta(minutes=1), timedelta(hours=2), timedelta(0))}
    stale, first, newer = names.values()
    for name in names.values():
        (bronze / name).mkdir(parents=True)
    movielens.publish(str(bronze), first, {"files": []})
    movielens.publish(str(bronze), newer, {"files": []})
    assert json.loads((bronze / "_manifest.json").read_text())["folder"] == newer
    assert sorted(p.name for p in bronze.iterdir()) == sorted(["_manifest.json", first, newer])  # no staged file
    assert movielens.landed_at(newer) == datetime.strptime(newer[7:23], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert movielens.landed_at("not-a-landing") is None
