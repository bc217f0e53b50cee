"""JVM jars from Maven Central, resolved once into a cache: Apache Kafka's broker, S3Proxy (the local S3 server),
the jars every Spark session of the project loads (Spark's Kafka source, Delta Lake) and, for a lakehouse on S3,
Spark's s3a:// filesystem (hadoop-aws)."""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path

BROKER = "broker"
S3PROXY = "s3proxy"
SPARK_KAFKA = "spark-kafka"
DELTA = "delta"
S3A = "s3a"
_POMS = {BROKER: "broker-pom.xml", S3PROXY: "s3proxy-pom.xml", SPARK_KAFKA: "spark-kafka-pom.xml",
         DELTA: "delta-pom.xml", S3A: "s3a-pom.xml"}
# Spark's own jars already carry Scala, Hadoop, Parquet, Jackson and the compression codecs; only the listed jars
# are added (Delta's transitive Hadoop 3.4, Parquet 1.16 and Jackson 2.13 would clash with them).
# hadoop-aws's AWS SDK modules come with their transitive jars, less those its pom excludes.
_TRANSITIVE = {BROKER: True, S3PROXY: True, SPARK_KAFKA: False, DELTA: False, S3A: True}
# What a Spark session of the project (local or the Spark Connect server) puts on `spark.jars`.
SPARK = (SPARK_KAFKA, DELTA)


class JarResolutionError(RuntimeError):
    """Maven could not resolve the jars."""


def cache_dir() -> Path:
    return Path(os.environ.get("RECO_CACHE_DIR", "~/.cache/reco-assets")).expanduser()


def _pom(name: str) -> bytes:
    return resources.files("reco_assets.jars").joinpath(_POMS[name]).read_bytes()


def jar_dir(name: str) -> Path:
    """Where the jars of `name` live; the folder name changes whenever the pinned pom changes."""
    digest = hashlib.sha1(_pom(name)).hexdigest()[:12]
    return cache_dir() / "jars" / f"{name}-{digest}"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def resolve(name: str, log=_stderr) -> Path:
    """Resolve the jars of `name` with Maven (once; later calls return the cached folder)."""
    target = jar_dir(name)
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarResolutionError(f"Maven (`mvn`) is needed to fetch the {name} jars; run scripts/setup.sh or "
                                 "install maven")
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    staged.mkdir(parents=True)
    try:
        pom = staged / "pom.xml"
        pom.write_bytes(_pom(name))
        log(f"resolving {name} jars from Maven Central into {target}")
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staged}", "-DincludeScope=runtime",
               f"-DexcludeTransitive={str(not _TRANSITIVE[name]).lower()}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise JarResolutionError(f"mvn failed to resolve {name} jars: " + " | ".join(tail))
        pom.unlink()
        (staged / ".complete").write_text("")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return target


def jars(name: str) -> list[Path]:
    return sorted(resolve(name).glob("*.jar"))


def spark_jars(s3: bool = False) -> list[Path]:
    """Every jar a Spark session of the project needs on `spark.jars`: Kafka source and Delta Lake, and with `s3`
    the s3a:// filesystem."""
    return [jar for name in (*SPARK, S3A) if s3 or name != S3A for jar in jars(name)]
