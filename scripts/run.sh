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
if [ -n "${SPARK_REMOTE:-}" ]; then
  echo "[run] runs use the Spark Connect server at $SPARK_REMOTE"
elif [ "${RECO_SPARK_CONNECT:-1}" != "0" ]; then
  # One warm Spark for every run (state under $RECO_DATA_DIR/spark-connect); `reco-assets spark down` stops it.
  export SPARK_CONNECT_PORT="${SPARK_CONNECT_PORT:-15002}"
  if .venv/bin/reco-assets spark up; then
    export SPARK_REMOTE="sc://127.0.0.1:$SPARK_CONNECT_PORT"
  else
    echo "[run] no Spark Connect server (see above): each run starts its own local Spark"
  fi
else
  echo "[run] RECO_SPARK_CONNECT=0: each run starts its own local Spark"
fi
echo "[run] RECO_DATA_DIR=$RECO_DATA_DIR DAGSTER_HOME=$DAGSTER_HOME"
# A run left STARTED by a Dagster that was killed or a machine that rebooted would hold its hour for good.
.venv/bin/reco-assets cancel-orphaned-runs
echo "[run] open http://127.0.0.1:${DAGSTER_PORT:-3000} and materialize the asset graph; Ctrl+C stops Dagster"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
still_running() {
  # dagster dev has stopped (Ctrl+C): say which of the project's services outlive it, and how to stop them.
  local kept=()
  alive "$RECO_DATA_DIR/kafka/kafka.pid" && kept+=("the Kafka broker (.venv/bin/reco-assets kafka down)")
  alive "$RECO_DATA_DIR/spark-connect/connect.pid" && kept+=("the Spark Connect server (.venv/bin/reco-assets spark down)")
  if [ ${#kept[@]} -gt 0 ]; then
    echo "[run] Dagster stopped. Still running, for the next start: $(IFS=';'; echo "${kept[*]}" | sed 's/;/ and /')."
    echo "[run] \`make stop\` stops them."
  else
    echo "[run] Dagster stopped."
  fi
}
# Everything started from here on carries this mark, so that the stop below kills only this make run's processes.
export RECO_RUN_MARK="make-run-$$"
# The HTTP API beside Dagster, in the same process group: Ctrl+C stops both.
.venv/bin/reco-assets serve &
api=$!
echo "[run] the API on http://${RECO_API_HOST:-127.0.0.1}:${RECO_API_PORT:-8000} (docs at /docs)"
stop_all() {
  kill "$api" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$api" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$api" 2>/dev/null || true
  # A run worker that was starting at Ctrl+C defers the interrupt to its first step and keeps its code server up.
  # What is left after a further 1 s is killed; when a run worker was (status 3, leftovers.KILLED_A_RUN_WORKER),
  # its run is marked canceled, so that the sensor runs its hour again.
  local status=0
  .venv/bin/python -m reco_assets.services.leftovers "$(ps -o pgid= $$ | tr -d ' ')" "RECO_RUN_MARK=$RECO_RUN_MARK" \
    || status=$?
  if [ "$status" = 3 ]; then .venv/bin/reco-assets cancel-orphaned-runs || true; fi
  still_running
}
trap stop_all EXIT
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
