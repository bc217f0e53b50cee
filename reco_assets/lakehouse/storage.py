"""Where the tables live, and how Spark, delta-rs, pyarrow and DuckDB each reach them.

By default the lakehouse is the folder `$RECO_DATA_DIR/lakehouse`. With `RECO_LAKEHOUSE_URI=s3a://bucket/prefix`
it is on S3 or an S3-compatible server; the Dagster home, the DuckDB catalog, the downloads and the Kafka state stay
on local disk either way.

Credentials come only from the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
`AWS_REGION` and, for a server other than AWS, `AWS_ENDPOINT_URL`. Nothing here puts a key into Spark's settings,
Dagster's metadata or a log: each client reads the keys from the environment itself (Spark's driver copies them
into the Hadoop configuration it ships to the executors, and its UI redacts them).
"""

import os
from urllib.parse import urlparse

from pyarrow import fs

LAKEHOUSE_URI = "RECO_LAKEHOUSE_URI"
S3_SCHEMES = ("s3a://", "s3://")
DEFAULT_REGION = "us-east-1"
# How an S3 server says that it refuses the credentials (as pyarrow's AWS SDK reports it, or the S3 error code).
REFUSED = ("ACCESS_DENIED", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId")


class StorageError(RuntimeError):
    """The lakehouse's storage is misconfigured or unreachable; the message says which setting to fix."""


def configured_root() -> str | None:
    """`RECO_LAKEHOUSE_URI`, when the lakehouse is not the local default (a local folder made absolute)."""
    uri = os.environ.get(LAKEHOUSE_URI)
    if not uri:
        return None
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def on_s3(uri: str | None = None) -> bool:
    """Whether `uri` (default: the configured lakehouse) is on S3."""
    uri = configured_root() if uri is None else uri
    return bool(uri) and uri.startswith(S3_SCHEMES)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def s3_uri(uri: str) -> str:
    """`s3a://…` (Spark's scheme) as `s3://…` (DuckDB's and pyarrow's); any other URI unchanged."""
    return "s3://" + uri.removeprefix("s3a://") if uri.startswith("s3a://") else uri


def bucket_of(uri: str) -> str:
    return urlparse(uri).netloc


def endpoint() -> str | None:
    """The S3 endpoint of a server other than AWS (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def spark_settings() -> dict[str, str]:
    """Spark's s3a:// settings (hadoop-aws). The keys are not among them: the driver reads them from the environment
    and ships them to the executors in the job's Hadoop configuration."""
    settings = {"spark.hadoop.fs.s3a.endpoint.region": region()}
    if url := endpoint():
        settings |= {"spark.hadoop.fs.s3a.endpoint": url,
                     "spark.hadoop.fs.s3a.path.style.access": "true",
                     "spark.hadoop.fs.s3a.connection.ssl.enabled": str(url.startswith("https://")).lower()}
    return settings


def delta_options(uri: str) -> dict[str, str] | None:
    """delta-rs storage options for `uri` (None for a local table); it reads the keys from the environment."""
    if not on_s3(uri):
        return None
    options = {"AWS_REGION": region()}
    if url := endpoint():
        options |= {"AWS_ENDPOINT_URL": url, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
                    "AWS_ALLOW_HTTP": str(url.startswith("http://")).lower()}
    return options


def write_options(uri: str) -> dict[str, str] | None:
    """delta-rs storage options for a commit. On S3 it commits by copy and rename, safe with one writer per table
    at a time, the same rule as Spark's S3 log store (docs/lakehouse.md)."""
    options = delta_options(uri)
    return None if options is None else {**options, "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}


def filesystem(uri: str) -> tuple[fs.FileSystem, str]:
    """(a pyarrow filesystem, the path in it) for a local path or an S3 URI."""
    if not on_s3(uri):
        return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    parsed = urlparse(uri)
    options = {"region": region()}
    if url := endpoint():
        target = urlparse(url)
        options |= {"endpoint_override": target.netloc, "scheme": target.scheme or "https",
                    "force_virtual_addressing": False}
    return fs.S3FileSystem(**options), f"{parsed.netloc}{parsed.path}".rstrip("/")


def check(uri: str) -> None:
    """Refuse, with the setting to fix, a lakehouse on S3 whose endpoint is unreachable, whose bucket is missing or
    whose credentials are refused; a local lakehouse passes. One request: milliseconds."""
    if not on_s3(uri):
        if "://" in uri:
            raise StorageError(f"{LAKEHOUSE_URI}={uri}: the lakehouse is either s3a://bucket/prefix or a local folder")
        return
    if not uri.startswith("s3a://"):
        raise StorageError(f"{LAKEHOUSE_URI}={uri}: use the s3a:// scheme (Spark's S3 filesystem), as in "
                           f"s3a://{bucket_of(uri)}{urlparse(uri).path}")
    if not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise StorageError(f"the lakehouse is on S3 ({uri}) but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not "
                           "set; export them (`reco-assets s3 up` prints them for the local server)")
    if (url := endpoint()) and not url.startswith(("http://", "https://")):
        raise StorageError(f"AWS_ENDPOINT_URL={url}: give the S3 endpoint as http://host:port or https://host")
    bucket = bucket_of(uri)
    where = endpoint() or f"AWS S3 ({region()})"
    s3, _ = filesystem(uri)
    try:
        found = s3.get_file_info(bucket).type != fs.FileType.NotFound
    except OSError as error:
        text = str(error)
        if any(code in text for code in REFUSED):
            raise StorageError(f"{where} refused the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for "
                               f"bucket {bucket!r}: {text.splitlines()[0][:200]}") from None
        raise StorageError(f"cannot reach the lakehouse's S3 endpoint {where} (AWS_ENDPOINT_URL): "
                           f"{text.splitlines()[0][:200]}") from None
    if not found:
        raise StorageError(f"bucket {bucket!r} of {LAKEHOUSE_URI}={uri} does not exist at {where}; create it "
                           "(`reco-assets s3 up --bucket NAME` does for the local server)")
