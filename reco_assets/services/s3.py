"""A local S3-compatible server: S3Proxy (from Maven Central) over a folder, for trying the lakehouse on object
storage and for the tests. A real implementation of the S3 API with signed requests, not a mock: a bucket is a
folder under `$RECO_DATA_DIR/s3/data`.

Its access key and secret are made once, kept in `$RECO_DATA_DIR/s3/credentials.json` (readable by its owner only)
and given to clients through the environment (`settings()`), never written to logs.
"""

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from reco_assets import jars
from reco_assets.services.base import LocalService, ServiceError, port_open

DEFAULT_PORT = 9000
REGION = "us-east-1"
# Current AWS SDKs add CRC checksums to every upload and check them on every download unless told to do so only
# where S3 requires it; S3Proxy refuses such uploads (XAmzContentSHA256Mismatch, measured with pyarrow 26's SDK).
CHECKSUMS_WHEN_REQUIRED = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}


class S3ServerError(ServiceError):
    """The local S3 server could not be started, reached or stopped, or a bucket not created."""


def default_port() -> int:
    return int(os.environ.get("RECO_S3_PORT", str(DEFAULT_PORT)))


class S3Server(LocalService):
    """S3Proxy on 127.0.0.1 with the filesystem backend."""

    title = "the S3 server (S3Proxy)"
    name = "s3"
    marker = "org.gaul.s3proxy.Main"
    port_variable = "RECO_S3_PORT"
    error = S3ServerError

    def __init__(self, data_dir: str | Path, port: int | None = None):
        super().__init__(data_dir, port or default_port())

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.endpoint

    @property
    def credentials(self) -> tuple[str, str]:
        """(access key, secret key), made on first use."""
        path = self.home / "credentials.json"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"access_key": f"reco{secrets.token_hex(8)}", "secret_key": secrets.token_urlsafe(30)}, out)
        stored = json.loads(path.read_text())
        return stored["access_key"], stored["secret_key"]

    def settings(self) -> dict[str, str]:
        """The environment a client needs (AWS SDKs, DuckDB's S3 secret from the environment, Spark's s3a)."""
        access_key, secret_key = self.credentials
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_REGION": REGION, **CHECKSUMS_WHEN_REQUIRED}

    def prepare(self, log) -> None:
        jars.resolve(jars.S3PROXY, log=log)
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        self.write_logging()
        access_key, secret_key = self.credentials
        config = self.home / "s3proxy.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join([
                f"s3proxy.endpoint={self.endpoint}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={access_key}",
                f"s3proxy.credential={secret_key}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={self.home / 'data'}",
                "",
            ]))

    def write_logging(self) -> None:
        """Logback's settings: the Maven artifact ships none, and logback's default logs every request of S3Proxy and
        its Jetty at DEBUG (211 MB of log for one batch graph of the sample, and the CPU to write it)."""
        level = os.environ.get("RECO_S3_LOG_LEVEL", "INFO")
        (self.home / "logback.xml").write_text(
            '<configuration>\n'
            '  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">\n'
            '    <encoder><pattern>%d{ISO8601} %-5level [%thread] %logger{36} - %msg%n</pattern></encoder>\n'
            '  </appender>\n'
            f'  <root level="{level}"><appender-ref ref="out"/></root>\n'
            '</configuration>\n')

    def command(self) -> list[str]:
        classpath = os.pathsep.join(str(p) for p in jars.jars(jars.S3PROXY))
        heap = os.environ.get("RECO_S3_HEAP_OPTS", "-Xms64m -Xmx512m").split()
        logging = f"-Dlogback.configurationFile={self.home / 'logback.xml'}"
        return [shutil.which("java") or "java", *heap, logging, "-cp", classpath, "org.gaul.s3proxy.Main",
                "--properties", str(self.home / "s3proxy.conf")]

    def not_ready(self, timeout: float) -> str | None:
        """Ready when it answers HTTP: an unsigned request gets S3's 403 AccessDenied."""
        if not port_open(self.host, self.port):
            return "it does not listen yet"
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=min(timeout, 5.0)).close()
        except urllib.error.HTTPError as error:
            return None if error.code == 403 else f"it answered HTTP {error.code}"
        except OSError as error:
            return f"it does not answer HTTP ({error})"
        return "it answered an unsigned request: authorization is off"

    def filesystem(self):
        """A pyarrow S3 filesystem signed with the server's credentials."""
        from pyarrow import fs

        for name, value in CHECKSUMS_WHEN_REQUIRED.items():  # read by the AWS SDK when it makes a client
            os.environ.setdefault(name, value)
        access_key, secret_key = self.credentials
        return fs.S3FileSystem(access_key=access_key, secret_key=secret_key, endpoint_override=self.endpoint,
                               scheme="http", region=REGION, allow_bucket_creation=True)

    def create_bucket(self, bucket: str) -> bool:
        """Create `bucket` through the S3 API (a signed CreateBucket); False when it exists already."""
        from pyarrow import fs

        s3 = self.filesystem()
        try:
            if s3.get_file_info(bucket).type != fs.FileType.NotFound:
                return False
            s3.create_dir(bucket)
        except OSError as error:
            raise S3ServerError(f"could not create bucket {bucket!r} at {self.endpoint}: {error}") from None
        return True
