"""The local S3 server for real: S3Proxy from Maven Central over a folder, signed requests through the S3 API."""

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reco_assets.services import free_port, pid_alive
from reco_assets.services.s3 import REGION, S3Server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# Writes then reads an object with pyarrow's S3 client, configured from the environment only.
CLIENT = """
import os, sys
from pyarrow import fs
s3 = fs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                     endpoint_override=os.environ["AWS_ENDPOINT_URL"], region=os.environ["AWS_REGION"])
with s3.open_output_stream(sys.argv[1]) as out:
    out.write(b"hello lake")
print(s3.open_input_stream(sys.argv[1]).read().decode())
"""


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(data_dir), "s3", *args],
                          capture_output=True, text=True, timeout=600)


def test_up_creates_the_bucket_prints_the_settings_and_serves_signed_requests_only(tmp_path):
    port = str(free_port())
    up = cli(tmp_path, "up", "--port", port, "--bucket", "lake")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        settings = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                        if line.startswith("export "))
        assert "bucket lake: created" in up.stdout
        assert settings["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}" and settings["AWS_REGION"] == REGION
        secret = settings["AWS_SECRET_ACCESS_KEY"]
        assert secret not in up.stderr  # printed once, for export, never logged
        assert oct((tmp_path / "s3" / "credentials.json").stat().st_mode & 0o777) == "0o600"

        # A client as a user runs it: the printed settings exported, objects written and read through the S3 API.
        client = subprocess.run([sys.executable, "-c", CLIENT, "lake/bronze/hello.txt"], env=os.environ | settings,
                                capture_output=True, text=True, timeout=120)
        assert client.stdout.strip() == "hello lake", client.stderr[-2000:]
        assert (tmp_path / "s3" / "data" / "lake" / "bronze" / "hello.txt").read_bytes() == b"hello lake"

        with pytest.raises(urllib.error.HTTPError) as unsigned:  # not a mock: S3 refuses what is not signed
            urllib.request.urlopen(f"http://127.0.0.1:{port}/lake/bronze/hello.txt", timeout=10)
        assert unsigned.value.code == 403
        forged = subprocess.run([sys.executable, "-c", CLIENT, "lake/bronze/forged.txt"], capture_output=True,
                                text=True, env=os.environ | settings | {"AWS_SECRET_ACCESS_KEY": "wrong"}, timeout=120)
        assert forged.returncode != 0 and "SIGNATURE_DOES_NOT_MATCH" in forged.stderr, forged.stderr[-2000:]

        again = cli(tmp_path, "up", "--port", port)
        assert again.returncode == 0 and "bucket lake: exists" in again.stdout
        status = cli(tmp_path, "status", "--port", port)
        assert "running, ready" in status.stdout, status.stdout
    finally:
        pid = S3Server(tmp_path, port=int(port)).read_pid()
        down = cli(tmp_path, "down", "--port", port)
    assert down.stdout.strip() == "stopped" and pid and not pid_alive(pid)
    assert "not running" in cli(tmp_path, "status", "--port", port).stdout


def test_a_taken_port_is_refused_with_the_reason(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = cli(tmp_path, "up", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert "is taken by another process; stop it or set RECO_S3_PORT to another port" in done.stderr
