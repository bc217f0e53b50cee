"""The project's own files: definitions load, docker-compose matches the settings, the sample is complete."""

import re
import shlex
import tomllib
from pathlib import Path

import dagster as dg
import yaml
from packaging.requirements import Requirement

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.definitions import defs
from reco_assets.kafka.client import EVENT_TOPICS, TOPIC_CONFIG, TOPIC_PARTITIONS
from reco_assets.lakehouse.tables import MOVIELENS_FILES

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_every_layer():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "bronze_movielens",
        "silver_ratings",
        "gold_recommendations",
        "gold_reco_evaluation",
        "duckdb_catalog",
    } <= keys
    groups = {defs.resolve_assets_def(k).group_names_by_key[dg.AssetKey(k)] for k in keys}
    assert groups == {"bronze", "silver", "gold", "catalog"}
    assert defs.resolve_job_def("movielens_batch_job")


def test_bundled_sample_keeps_its_licence():
    assert (BUNDLED_SAMPLE / "README.txt").read_text().count("redistribute") >= 1
    for name in MOVIELENS_FILES:
        assert (BUNDLED_SAMPLE / name).is_file()


# The docker-compose stack (docker-compose.yml, Dockerfile, docker/dagster.yaml). No Docker engine runs these
# tests, so they hold the files to the project's settings: what every container must agree on.
PROJECT_ENV = {
    "RECO_DATA_DIR": "/data",
    "RECO_LAKEHOUSE_URI": "s3a://lake/reco",
    "AWS_ENDPOINT_URL": "http://s3:9000",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "SPARK_MASTER": "spark://spark-master:7077",
}
PROJECT_SERVICES = {"s3-init", "spark-master", "spark-worker", "dagster-webserver", "dagster-daemon",
                    "event-generator"}
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
TOPICS = {"events_views", "events_clicks", "events_ratings"}
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


def load_yaml(name: str):
    return yaml.safe_load((ROOT / name).read_text())


def env_var_names(node) -> set[str]:
    """The variables a Dagster config reads with the `{env: NAME}` syntax."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_var_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_var_names(v) for v in node))
    return set()


def mounts(service: dict) -> dict[str, str]:
    """Mount target -> source (short `source:target[:mode]` or long syntax)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            result[target] = source
    return result


def published_container_ports(service: dict) -> set[int]:
    return {int(str(p["target"] if isinstance(p, dict) else p).split(":")[-1]) for p in service.get("ports", [])}


def option_values(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


def topic_create_commands(service: dict) -> list[list[str]]:
    command = service["command"]
    script = command if isinstance(command, str) else command[-1]
    lines = script.replace("\\\n", " ").splitlines()
    commands = [shlex.split(line) for line in lines if line.strip()]
    return [argv for argv in commands if argv[0].endswith("kafka-topics.sh") and "--create" in argv]


def test_docker_compose_runs_the_whole_stack():
    compose = load_yaml("docker-compose.yml")
    services = compose["services"]
    assert {"kafka", "kafka-init", "postgres", "spark-master", "spark-worker", *DAGSTER_SERVICES} <= set(services)
    assert services["kafka"]["image"] == services["kafka-init"]["image"] == "apache/kafka:4.1.1"
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "healthcheck" in services["postgres"]
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in DAGSTER_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    # The generator only with `--profile demo`, after the topics exist.
    generator = services["event-generator"]
    assert generator["profiles"] == ["demo"]
    assert generator["command"][:2] == ["reco-assets", "generate-events"]
    assert generator["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    # The webserver on host port 3000, the Spark master's UI on 8080.
    webserver = services["dagster-webserver"]
    assert "127.0.0.1:3000:3000" in webserver["ports"]
    assert option_values(webserver["command"], "-p") == ["3000"]
    assert {7077, 8080} <= published_container_ports(services["spark-master"])


def test_docker_compose_kafka_listeners_and_topics():
    services = load_yaml("docker-compose.yml")["services"]
    kafka = services["kafka"]["environment"]
    advertised = {listener.split("://")[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert {PROJECT_ENV["KAFKA_BOOTSTRAP_SERVERS"], "localhost:29092"} <= advertised
    assert 29092 in published_container_ports(services["kafka"])

    # kafka-init creates the topics exactly as the project's own `reco-assets kafka create-topics` does.
    assert TOPICS == set(EVENT_TOPICS) and TOPIC_PARTITIONS == 3
    assert TOPIC_CONFIG == {"message.timestamp.type": "LogAppendTime", "retention.ms": str(SEVEN_DAYS_MS)}
    commands = topic_create_commands(services["kafka-init"])
    assert sorted(option_values(argv, "--topic")[0] for argv in commands) == sorted(TOPICS)
    for argv in commands:
        assert "--if-not-exists" in argv
        assert option_values(argv, "--bootstrap-server") == ["kafka:9092"]
        assert option_values(argv, "--partitions") == ["3"]
        assert dict(c.split("=", 1) for c in option_values(argv, "--config")) == TOPIC_CONFIG


def test_docker_compose_project_services_share_settings_and_data():
    compose = load_yaml("docker-compose.yml")
    services = compose["services"]
    image = services["dagster-webserver"]["image"]
    project = {name for name, service in services.items() if service.get("image") == image}
    assert project == PROJECT_SERVICES
    # Local state (catalog, downloads) on a volume of the Dagster containers; the tables on the S3 service.
    volume = mounts(services["dagster-webserver"])["/data"]
    assert volume in compose["volumes"] and mounts(services["dagster-daemon"])["/data"] == volume
    for name in project:
        service = services[name]
        assert service["build"] == ".", name
        assert PROJECT_ENV.items() <= service["environment"].items(), name
    s3 = services["s3"]["environment"]
    client = services["dagster-daemon"]["environment"]
    assert (s3["S3PROXY_IDENTITY"], s3["S3PROXY_CREDENTIAL"]) == (client["AWS_ACCESS_KEY_ID"],
                                                                  client["AWS_SECRET_ACCESS_KEY"])
    assert s3["S3PROXY_ENDPOINT"].rsplit(":", 1)[1] == PROJECT_ENV["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    assert s3["JCLOUDS_PROVIDER"] == "filesystem" and mounts(services["s3"])["/data"] in compose["volumes"]
    init = services["s3-init"]["command"]
    compile(init[-1], "s3-init", "exec")
    assert 'create_dir("lake")' in init[-1] and "storage.check" in init[-1]
    for name in DAGSTER_SERVICES:
        assert services[name]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    # The master the project connects to is the one the compose file starts, and the one workers join.
    master = services["spark-master"]["command"]
    assert "org.apache.spark.deploy.master.Master" in master
    [host], [port] = option_values(master, "--host"), option_values(master, "--port")
    assert PROJECT_ENV["SPARK_MASTER"] == f"spark://{host}:{port}"
    assert PROJECT_ENV["SPARK_MASTER"] in services["spark-worker"]["command"]


def test_docker_dagster_instance_uses_postgres_from_the_compose_env(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    instance = load_yaml("docker/dagster.yaml")
    pg = instance["storage"]["postgres"]["postgres_db"]
    names = env_var_names(instance)
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"} <= names
    services = load_yaml("docker-compose.yml")["services"]
    postgres = services["postgres"]["environment"]
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert names <= set(env), name
        assert env["DAGSTER_HOME"] == "/opt/dagster/home"
        # The same database as the one the postgres service creates.
        assert env[pg["hostname"]["env"]] in services
        assert str(env[pg["port"]["env"]]) == "5432"
        assert env[pg["username"]["env"]] == postgres["POSTGRES_USER"]
        assert env[pg["password"]["env"]] == postgres["POSTGRES_PASSWORD"]
        assert env[pg["db_name"]["env"]] == postgres["POSTGRES_DB"]
    # Dagster's own schema accepts the file (dagster-postgres is needed only to connect).
    for name in names:
        monkeypatch.setenv(name, "5432")
    config, _ = dagster_instance_config(str(ROOT / "docker"), "dagster.yaml")
    assert set(config["storage"]) == {"postgres"}


def test_docker_dagster_instance_keeps_the_run_queue_policy():
    local, docker = load_yaml("dagster.yaml"), load_yaml("docker/dagster.yaml")
    assert docker["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs, local_runs = docker["concurrency"]["runs"], local["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] == local_runs["max_concurrent_runs"]
    limits = runs.get("tag_concurrency_limits") or []
    assert all(limit in limits for limit in local_runs.get("tag_concurrency_limits") or [])
    # One run at a time per hour partition of the event assets.
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert docker["concurrency"]["pools"] == local["concurrency"]["pools"] == {"default_limit": 1,
                                                                              "op_granularity_run_buffer": 1}
    assert docker["run_monitoring"]["enabled"] is True
    assert docker["telemetry"]["enabled"] is False
    # Files that runs write (in the daemon's container) and the webserver reads are on the shared volume.
    for key in ("local_artifact_storage", "compute_logs"):
        assert docker[key]["config"]["base_dir"].startswith(PROJECT_ENV["RECO_DATA_DIR"] + "/"), key


def test_dockerfile_installs_the_instance_storage_and_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    dagster_home = re.search(r"^ENV .*\bDAGSTER_HOME=(\S+)", dockerfile, re.M).group(1)
    assert dagster_home == "/opt/dagster/home"
    assert re.search(rf"^COPY docker/dagster\.yaml {re.escape(dagster_home)}/dagster\.yaml$", dockerfile, re.M)
    assert re.search(r"^COPY workspace\.yaml ", dockerfile, re.M)
    assert re.search(r"^EXPOSE 3000$", dockerfile, re.M)
    assert "RECO_CACHE_DIR=/opt/reco-cache" in dockerfile
    assert "reco-assets kafka install --spark-only" in dockerfile
    # dagster-postgres is versioned with dagster: 0.(minor + 16).patch belongs to 1.minor.patch.
    pin = re.search(r"dagster-postgres==0\.(\d+)\.(\d+)\b", dockerfile)
    assert pin, "the Dockerfile must pin dagster-postgres"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    dagster = next(Requirement(d) for d in dependencies if Requirement(d).name == "dagster")
    minor, patch = int(pin.group(1)) - 16, int(pin.group(2))
    assert f"1.{minor}.{patch}" in dagster.specifier, (pin.group(0), str(dagster.specifier))


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
