#!/usr/bin/env bash
# Idempotent set-up: OS packages (Java, OpenBLAS), the virtualenv and the project's Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

os_packages=()
if ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
  os_packages+=(openjdk-17-jre-headless)
fi
# Spark MLlib's ALS uses native BLAS/LAPACK through libblas.so.3 when it is there (OpenBLAS here).
if ! ldconfig -p 2>/dev/null | grep -q 'libblas.so.3'; then
  os_packages+=(libopenblas0-pthread)
fi
# Kafka's broker and Spark's Kafka connector are resolved from Maven Central with Maven.
if ! command -v mvn >/dev/null; then
  os_packages+=(maven)
fi
# The UI test (reco_assets_tests/test_ui.py) drives Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  os_packages+=(chromium)
fi
if [ ${#os_packages[@]} -gt 0 ]; then
  log "installing OS packages: ${os_packages[*]}"
  if command -v apt-get >/dev/null && as_root apt-get update -qq && \
     as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${os_packages[@]}" >/dev/null; then
    log "OS packages installed"
  else
    log "could not install ${os_packages[*]}: install them with your package manager (Java 17+ and Maven are required; Chromium only for the UI test)"
    java -version >/dev/null 2>&1 || exit 1
    command -v mvn >/dev/null || exit 1
  fi
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  log "Python 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing Python packages (pyproject.toml changed or first run)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Kafka broker jars and Spark's Kafka connector, once, into ${RECO_CACHE_DIR:-~/.cache/reco-assets}.
.venv/bin/reco-assets kafka install >/dev/null
# DuckDB's Delta extension, from the duckdb-ext-delta package into ~/.duckdb/extensions (no download at query time).
.venv/bin/python -c 'from reco_assets.lakehouse.duck import install_delta; install_delta()'
log "ready: $(.venv/bin/python --version), $(java -version 2>&1 | head -1)"
