# The project's image for docker-compose: Python 3.11, Java 17 for Spark, OpenBLAS for ALS.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/reco_assets
COPY pyproject.toml README.md ./
COPY reco_assets ./reco_assets
RUN pip install --no-cache-dir -e .
COPY dagster.yaml workspace.yaml ./
COPY data/movielens ./data/movielens
ENV RECO_DATA_DIR=/data DAGSTER_HOME=/opt/dagster_home
RUN mkdir -p /opt/dagster_home && cp dagster.yaml /opt/dagster_home/dagster.yaml
