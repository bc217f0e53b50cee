"""The project's local services: the Kafka broker, the Spark Connect server, the S3 server, a Spark standalone
cluster and the HTTP API."""

import os
import sys
import time
from pathlib import Path

from reco_assets.cli.common import CliError, emit, positive_int


def run_service(service, action: str) -> None:
    """`up`, `down` or `status` of a local service (reco_assets.services), as every service command has them."""
    from reco_assets import jars
    from reco_assets.services import ServiceError

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    try:
        if action == "up":
            started = time.monotonic()
            status = service.up(log=log)
            print(f"{service.title} runs on {status.address} (pid {status.pid}), ready after "
                  f"{time.monotonic() - started:.1f} s; state and logs in {status.home}")
        elif action == "down":
            print("stopped" if service.down(log=log) else "not running")
        else:
            status = service.status()
            print(f"{service.title}: {status.detail}" + (f" (pid {status.pid}, {status.address}, state in "
                                                         f"{status.home})" if status.pid else ""))
    except (ServiceError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


def cmd_kafka(args) -> None:
    from reco_assets import jars
    from reco_assets.kafka.client import KafkaResource, KafkaSetupError, ensure_topics, kafka_resource
    from reco_assets.services import LocalBroker

    broker = LocalBroker(args.data_dir, port=args.port)
    try:
        if args.action == "install":
            for name in [*jars.SPARK, jars.S3A] if args.spark_only else [*jars.SPARK, jars.S3A, jars.BROKER]:
                print(f"{name}: {jars.resolve(name, log=lambda message: print(message, file=sys.stderr))}")
        elif args.action == "create-topics":
            created = ensure_topics(kafka_resource(resolve=True).admin())
            print(f"topics created: {', '.join(created) or 'none (they exist)'}")
        else:
            run_service(broker, args.action)
            if args.action == "up":
                created = ensure_topics(KafkaResource(bootstrap_servers=broker.bootstrap_servers).admin())
                print(f"topics created: {', '.join(created) or 'none (they exist)'}")
            elif args.action == "status":
                show_topics(kafka_resource(resolve=True) if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                            else KafkaResource(bootstrap_servers=broker.bootstrap_servers))
    except (KafkaSetupError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


def cmd_spark(args) -> None:
    from reco_assets.services import ConnectServer

    server = ConnectServer(args.data_dir, port=args.port)
    run_service(server, args.action)
    if args.action == "up":
        print(f"runs use it with SPARK_REMOTE={server.url}")


def cmd_s3(args) -> None:
    from reco_assets.services.s3 import S3Server, S3ServerError

    server = S3Server(args.data_dir, port=args.port)
    run_service(server, args.action)
    if args.action == "up":
        try:
            created = server.create_bucket(args.bucket)
        except S3ServerError as error:
            raise CliError(str(error)) from None
        print(f"bucket {args.bucket}: {'created' if created else 'exists'}; for its clients:")
        for name, value in server.settings().items():
            print(f"export {name}={value}")


def cmd_cluster(args) -> None:
    from reco_assets.services.spark_cluster import cluster

    master, workers = cluster(args.data_dir, args.port, args.workers, args.cores, args.memory)
    for service in ([master, *workers] if args.action != "down" else [*workers, master]):
        run_service(service, args.action)
    if args.action == "up":
        print(f"export SPARK_MASTER={master.url}   # runs (or `reco-assets spark up`) then use this cluster")


def show_topics(kafka) -> None:
    from reco_assets.kafka.client import EVENT_TOPICS, KafkaSetupError, KafkaUnavailable

    kafka = kafka.model_copy(update={"request_timeout_s": 3.0})
    try:
        offsets = kafka.offsets()
        tps = offsets.partitions()
        end, start = offsets.end(tps), offsets.start(tps)
    except (KafkaUnavailable, KafkaSetupError) as error:
        print(f"topics at {kafka.bootstrap_servers}: {error}")
        return
    rows = [(topic, sum(1 for t, _ in tps if t == topic), sum(end[tp] - start[tp] for tp in tps if tp[0] == topic))
            for topic in EVENT_TOPICS]
    print(f"topics at {kafka.bootstrap_servers}:")
    emit(["topic", "partitions", "records retained"], rows, "table")


def cmd_serve(args) -> None:
    from reco_assets.serving.api import PortTaken, serve

    try:
        failed = serve(args.host, args.port, str(args.data_dir), args.refresh, args.workers)
    except PortTaken as error:
        raise CliError(str(error)) from None
    if failed:
        raise CliError("a worker of the API died (see above); the others were stopped")


def cmd_cancel_orphaned_runs(args) -> None:
    from reco_assets import orphaned_runs

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    import dagster as dg

    home = Path(os.environ.get("DAGSTER_HOME") or Path(args.data_dir) / "dagster_home")
    if not (home / "dagster.yaml").is_file():
        print(f"no Dagster instance at {home}: no runs to look at")
        return
    with dg.DagsterInstance.from_config(str(home)) as instance:
        cancelled = orphaned_runs.cancel_orphaned_runs(instance, log)
    print(f"{len(cancelled)} run(s) whose run worker is gone marked canceled" if cancelled else
          "no run lost its run worker")


def register(add) -> None:
    kafka = add("kafka", cmd_kafka, "the project's own Kafka broker on 127.0.0.1 (state in $RECO_DATA_DIR/kafka)",
                catalog=False)
    kafka.add_argument("action", choices=["up", "down", "status", "install", "create-topics"])
    kafka.add_argument("--port", type=positive_int, default=int(os.environ.get("KAFKA_PORT", "9092")),
                       help="broker port (controller: port + 1; default $KAFKA_PORT or 9092)")
    kafka.add_argument("--spark-only", action="store_true",
                       help="install: only the Spark jars (Kafka source, Delta Lake, hadoop-aws for S3)")
    spark = add("spark", cmd_spark, "the project's warm Spark: a Spark Connect server on 127.0.0.1 that runs use "
                "through SPARK_REMOTE (state in $RECO_DATA_DIR/spark-connect)", catalog=False)
    spark.add_argument("action", choices=["up", "down", "status"])
    spark.add_argument("--port", type=positive_int, default=int(os.environ.get("SPARK_CONNECT_PORT", "15002")),
                       help="server port (default $SPARK_CONNECT_PORT or 15002)")
    s3 = add("s3", cmd_s3, "the project's local S3-compatible server (S3Proxy over $RECO_DATA_DIR/s3/data) on "
             "127.0.0.1: `up` starts it, creates the bucket and prints the settings to export", catalog=False)
    s3.add_argument("action", choices=["up", "down", "status"])
    s3.add_argument("--port", type=positive_int, default=int(os.environ.get("RECO_S3_PORT", "9000")),
                    help="server port (default $RECO_S3_PORT or 9000)")
    s3.add_argument("--bucket", default="lake", help="the bucket `up` creates (default lake)")
    spark_cluster = add("cluster", cmd_cluster, "a Spark standalone cluster on 127.0.0.1: a master and workers as JVMs "
                        "of their own (state in $RECO_DATA_DIR/spark-master, spark-worker-N)", catalog=False)
    spark_cluster.add_argument("action", choices=["up", "down", "status"])
    spark_cluster.add_argument("--port", type=positive_int,
                               default=int(os.environ.get("RECO_SPARK_MASTER_PORT", "7077")),
                               help="master port (its UI on port + 1, worker N on port + 2N; default "
                                    "$RECO_SPARK_MASTER_PORT or 7077)")
    spark_cluster.add_argument("--workers", type=positive_int, default=1, help="how many workers (default 1)")
    spark_cluster.add_argument("--cores", type=positive_int, default=1, help="cores per worker (default 1)")
    spark_cluster.add_argument("--memory", default="2g", help="memory per worker for its executors (default 2g)")
    add("cancel-orphaned-runs", cmd_cancel_orphaned_runs, "mark canceled every STARTING or STARTED run whose run "
        "worker is gone (Dagster stopped mid-run, a killed process, a reboot), so the sensor runs its hour again; "
        "`make run` calls it when it starts", catalog=False)
    serve = add("serve", cmd_serve, "the read-only HTTP API over the gold tables (OpenAPI docs at /docs)",
                catalog=False)
    serve.add_argument("--host", default=os.environ.get("RECO_API_HOST", "127.0.0.1"),
                       help="address to listen on (default $RECO_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=int(os.environ.get("RECO_API_PORT", "8000")),
                       help="port (default $RECO_API_PORT or 8000)")
    serve.add_argument("--refresh", type=float, default=1.0,
                       help="seconds between looks at the gold tables' Delta logs (default 1)")
    serve.add_argument("--workers", type=positive_int, default=int(os.environ.get("RECO_API_WORKERS", "1")),
                       help="worker processes, each with its own serving copy (default $RECO_API_WORKERS or 1; "
                            "one per core to serve more requests/s)")
