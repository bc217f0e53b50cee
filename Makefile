.PHONY: setup run stop materialize test test-cluster lint bench clean

RECO_DATA_DIR ?= $(CURDIR)/data
DAGSTER_HOME ?= $(RECO_DATA_DIR)/dagster_home

setup:            ## virtualenv, Python packages, Java and OpenBLAS if missing
	scripts/setup.sh

run:              ## set up, then `dagster dev` on http://127.0.0.1:3000
	scripts/run.sh

stop:             ## stop the Kafka broker and Spark Connect server that `make run` leaves running (and S3, a cluster)
	-.venv/bin/reco-assets kafka down
	-.venv/bin/reco-assets spark down
	-.venv/bin/reco-assets s3 down
	-.venv/bin/reco-assets cluster down

materialize: setup ## set up, then materialize the MovieLens batch graph headless (no UI)
	mkdir -p "$(DAGSTER_HOME)" && ln -sf "$(CURDIR)/dagster.yaml" "$(DAGSTER_HOME)/dagster.yaml"
	RECO_DATA_DIR="$(RECO_DATA_DIR)" DAGSTER_HOME="$(DAGSTER_HOME)" \
	  .venv/bin/dagster job execute -m reco_assets.definitions -j movielens_batch_job

test: setup       ## set up, then the whole test suite (what CI runs)
	.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25

test-cluster: setup ## set up, then the graph on a local S3 server and Spark cluster against local mode (minutes)
	.venv/bin/python -m pytest -q -p no:cacheprovider -m cluster -s

lint: setup       ## ruff over the package, tests and benchmarks
	.venv/bin/ruff check reco_assets reco_assets_tests bench

bench: setup      ## the batch-graph benchmark (minutes; see docs/benchmarks.md)
	.venv/bin/python bench/batch_graph.py

clean:            ## remove what the pipeline wrote under ./data (keeps the bundled sample)
	rm -rf data/lakehouse data/warehouse.duckdb data/dagster_home data/downloads
