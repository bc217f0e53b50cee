# The project's image for docker-compose.yml. The Dagster webserver and daemon, the Spark master and
# workers and the event generator all run it, so the Spark driver (inside a Dagster run), the executors
# and their Python workers share one Python 3.11 with the same packages: Java 17 for Spark, OpenBLAS for
# ALS, procps because Spark's launch scripts call `ps`.
FROM python:3.11-slim-bookworm AS base
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECO_CACHE_DIR=/opt/reco-cache
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless libopenblas0-pthread procps \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/reco_assets

# The dependencies first, from pyproject.toml alone (an empty package stands in for the code), so that a
# change to the code does not reinstall pyspark, dagster & co. dagster-postgres is the instance storage of
# the compose stack (docker/dagster.yaml); its version is dagster's (1.13.x <-> 0.29.x), and pinning it
# pins dagster to 1.13.27 inside pyproject's range.
COPY pyproject.toml README.md ./
RUN mkdir reco_assets && touch reco_assets/__init__.py \
 && pip install --no-cache-dir . dagster-postgres==0.29.27 \
 && rm -rf reco_assets build reco_assets.egg-info

# Then the code, installed editable: the bundled MovieLens sample (the `bundled` source of bronze_movielens)
# is looked up next to the package, at /opt/reco_assets/data/movielens, not in site-packages.
COPY reco_assets ./reco_assets
RUN pip install --no-cache-dir --no-deps -e . \
 && python -c 'from reco_assets.lakehouse.duck import install_delta; install_delta()'
COPY data/movielens ./data/movielens
COPY workspace.yaml ./


# The jars every Spark session loads, Spark's Kafka connector (org.apache.spark:spark-sql-kafka-0-10_2.13,
# pyspark's version), Delta Lake (io.delta:delta-spark_4.2_2.13, delta-storage) and, for the lakehouse on S3,
# hadoop-aws 3.5.0 with its AWS SDK modules, resolved from Maven Central into $RECO_CACHE_DIR at build time,
# so that no container downloads at run time.
# Maven is only needed here; the final image takes the jars and leaves Maven behind.
FROM base AS spark-kafka-jars
RUN apt-get update \
 && apt-get install -y --no-install-recommends maven \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.m2 reco-assets kafka install --spark-only


FROM base
COPY --from=spark-kafka-jars /opt/reco-cache /opt/reco-cache
# RECO_DATA_DIR is a named volume of the Dagster services in docker-compose.yml (catalog, downloads, run
# files); the Delta tables are on S3 (RECO_LAKEHOUSE_URI).
ENV RECO_DATA_DIR=/data DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p /data /opt/dagster/home
COPY docker/dagster.yaml /opt/dagster/home/dagster.yaml
EXPOSE 3000
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
