#!/usr/bin/env bash
# Set everything up and start `dagster dev` (webserver + daemon) on 127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RECO_DATA_DIR="${RECO_DATA_DIR:-$PWD/data}"
export DAGSTER_HOME="${DAGSTER_HOME:-$RECO_DATA_DIR/dagster_home}"
mkdir -p "$DAGSTER_HOME"
ln -sf "$PWD/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  # The project's own single-node broker (state under $RECO_DATA_DIR/kafka); `reco-assets kafka down` stops it.
  .venv/bin/reco-assets kafka up
else
  echo "[run] using the Kafka cluster at $KAFKA_BOOTSTRAP_SERVERS"
  .venv/bin/reco-assets kafka create-topics
fi
echo "[run] RECO_DATA_DIR=$RECO_DATA_DIR DAGSTER_HOME=$DAGSTER_HOME"
echo "[run] open http://127.0.0.1:${DAGSTER_PORT:-3000} and materialize the asset graph"
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
