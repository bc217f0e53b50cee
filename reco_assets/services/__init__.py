"""The local processes the project runs itself, behind one abstraction (`base.LocalService`): the Kafka broker, the
Spark Connect server, the S3 server and a Spark standalone master and workers, each with its state under
`$RECO_DATA_DIR` and `up`, `down` and `status`."""

from reco_assets.services.base import LocalService, ServiceError, ServiceStatus, free_port, pid_alive, port_open
from reco_assets.services.kafka_broker import BrokerError, LocalBroker
from reco_assets.services.s3 import S3Server, S3ServerError
from reco_assets.services.spark_cluster import SparkClusterError, SparkMaster, SparkWorker
from reco_assets.services.spark_connect import ConnectServer, ConnectServerError

__all__ = ["BrokerError", "ConnectServer", "ConnectServerError", "LocalBroker", "LocalService", "S3Server",
           "S3ServerError", "ServiceError", "ServiceStatus", "SparkClusterError", "SparkMaster", "SparkWorker",
           "free_port", "pid_alive", "port_open"]
