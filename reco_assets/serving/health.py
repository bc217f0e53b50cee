"""What `/health` and `reco-assets stats` report beyond the tables: Kafka's lag behind bronze, the Spark Connect
server, and whether the live path keeps up."""

import os
from urllib.parse import urlparse

from reco_assets.kafka.client import KafkaResource, KafkaSetupError, KafkaUnavailable, lag_by_topic
from reco_assets.lakehouse import LakehouseResource
from reco_assets.services import port_open
from reco_assets.services.spark_connect import DEFAULT_PORT

LAG_COLUMNS = ["topic", "records_in_kafka", "records_in_bronze", "lag"]
# gold.trending_now is stale when records wait in Kafka and no live run updated it for this long.
STALE_AFTER_S = float(os.environ.get("RECO_STALE_AFTER_S", "300"))


def kafka_lag(kafka: KafkaResource, lakehouse: LakehouseResource) -> tuple[list[tuple], str | None]:
    """Per topic: records in Kafka, of them in bronze, lag; or why Kafka could not be asked."""
    kafka = kafka.model_copy(update={"request_timeout_s": min(kafka.request_timeout_s, 3.0)})
    try:
        offsets = kafka.offsets()
        tps = offsets.partitions()
        end, start = offsets.end(tps), offsets.start(tps)
    except (KafkaUnavailable, KafkaSetupError) as error:
        return [], str(error)
    lag = lag_by_topic(end, start, lakehouse.bronze_offsets())
    return [(topic, *counts) for topic, counts in lag.items()], None


def spark_connect(remote: str | None) -> dict:
    """The Spark Connect server that runs use (`SPARK_REMOTE`), if any: whether it accepts connections."""
    if not remote:
        return {"used": False, "detail": "SPARK_REMOTE is not set: each run starts its own local Spark"}
    url = urlparse(remote.replace("sc://", "http://", 1).split(";")[0])
    reachable = port_open(url.hostname or "127.0.0.1", url.port or DEFAULT_PORT)  # sc:// without a port: 15002
    return {"used": True, "url": remote.split(";")[0], "reachable": reachable,
            "detail": "accepts connections" if reachable else "does not accept connections: runs will fail "
                                                               "(`reco-assets spark up` starts the local one)"}
