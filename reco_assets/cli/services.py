"""The project's local services: the Kafka broker, the Spark Connect server and the HTTP API."""

import os
import sys
import time

from reco_assets.cli.common import CliError, emit, positive_int


def cmd_kafka(args) -> None:
    from reco_assets import jars
    from reco_assets.kafka.broker import BrokerError, LocalBroker
    from reco_assets.kafka.client import KafkaResource, KafkaSetupError, ensure_topics, kafka_resource

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    broker = LocalBroker(args.data_dir, port=args.port)
    try:
        if args.action == "install":
            for name in [*jars.SPARK] if args.spark_only else [*jars.SPARK, jars.BROKER]:
                print(f"{name}: {jars.resolve(name, log=log)}")
        elif args.action == "up":
            status = broker.up(log=log)
            created = ensure_topics(KafkaResource(bootstrap_servers=status.bootstrap_servers).admin())
            print(f"Kafka runs on {status.bootstrap_servers} (pid {status.pid}); topics created: "
                  f"{', '.join(created) or 'none (they exist)'}")
        elif args.action == "down":
            print("stopped" if broker.down(log=log) else "not running")
        elif args.action == "create-topics":
            created = ensure_topics(kafka_resource(resolve=True).admin())
            print(f"topics created: {', '.join(created) or 'none (they exist)'}")
        else:
            status = broker.status()
            print(f"local broker: {status.detail}" + (f" (pid {status.pid}, {status.bootstrap_servers}, "
                                                       f"state in {status.home})" if status.pid else ""))
            show_topics(kafka_resource(resolve=True) if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                        else KafkaResource(bootstrap_servers=broker.bootstrap_servers))
    except (BrokerError, KafkaSetupError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


def cmd_spark(args) -> None:
    from reco_assets import jars
    from reco_assets.spark_connect import ConnectServer, ConnectServerError

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    server = ConnectServer(args.data_dir, port=args.port)
    try:
        if args.action == "up":
            started = time.monotonic()
            status = server.up(log=log)
            print(f"Spark Connect runs on {status.url} (pid {status.pid}), answered a query after "
                  f"{time.monotonic() - started:.1f} s; runs use it with SPARK_REMOTE={status.url}")
        elif args.action == "down":
            print("stopped" if server.down(log=log) else "not running")
        else:
            status = server.status()
            print(f"Spark Connect server: {status.detail}" + (f" (pid {status.pid}, {status.url}, state in "
                                                              f"{status.home})" if status.pid else ""))
    except (ConnectServerError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


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
    import uvicorn

    from reco_assets.serving.api import create_app

    print(f"[serve] the API on http://{args.host}:{args.port} (docs at /docs), reading {args.data_dir}",
          file=sys.stderr)
    uvicorn.run(create_app(args.data_dir, refresh_s=args.refresh), host=args.host, port=args.port,
                log_level="warning", access_log=False)


def register(add) -> None:
    kafka = add("kafka", cmd_kafka, "the project's own Kafka broker on 127.0.0.1 (state in $RECO_DATA_DIR/kafka)",
                catalog=False)
    kafka.add_argument("action", choices=["up", "down", "status", "install", "create-topics"])
    kafka.add_argument("--port", type=positive_int, default=int(os.environ.get("KAFKA_PORT", "9092")),
                       help="broker port (controller: port + 1; default $KAFKA_PORT or 9092)")
    kafka.add_argument("--spark-only", action="store_true",
                       help="install: only the Spark jars (Kafka source, Delta Lake)")
    spark = add("spark", cmd_spark, "the project's warm Spark: a Spark Connect server on 127.0.0.1 that runs use "
                "through SPARK_REMOTE (state in $RECO_DATA_DIR/spark-connect)", catalog=False)
    spark.add_argument("action", choices=["up", "down", "status"])
    spark.add_argument("--port", type=positive_int, default=int(os.environ.get("SPARK_CONNECT_PORT", "15002")),
                       help="server port (default $SPARK_CONNECT_PORT or 15002)")
    serve = add("serve", cmd_serve, "the read-only HTTP API over the gold tables (OpenAPI docs at /docs)",
                catalog=False)
    serve.add_argument("--host", default=os.environ.get("RECO_API_HOST", "127.0.0.1"),
                       help="address to listen on (default $RECO_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=int(os.environ.get("RECO_API_PORT", "8000")),
                       help="port (default $RECO_API_PORT or 8000)")
    serve.add_argument("--refresh", type=float, default=1.0,
                       help="seconds between looks at the gold tables' Delta logs (default 1)")
