"""How Spark is reached: a local session stays on the loopback; a cluster that cannot run the work is refused."""

import ipaddress
import re

import dagster as dg
import pytest

from reco_assets.resources import SparkResource
from reco_assets.services import free_port
from reco_assets_tests.sockets import listening


def test_local_spark_listens_on_the_loopback_only(spark):
    """The driver, its block manager and its UI: no socket of the session's JVM is reachable from another host."""
    spark.range(10).count()  # the block manager and the UI are up once a job ran
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    sockets = listening(pid)
    assert len(sockets) >= 2, sockets  # at least the driver's RPC endpoint and the UI
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in sockets), sockets
    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"


def test_a_master_that_does_not_answer_is_refused_before_a_session_starts(monkeypatch):
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    master = f"spark://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"  # a master with a standby: neither answers
    resource = SparkResource(spark_config={"spark.master": master})
    with pytest.raises(dg.Failure, match=f"no Spark master answers at {re.escape(master)} \\(SPARK_MASTER\\)"):
        resource.setup_for_execution(dg.build_init_resource_context())
    assert resource._spark_session is None
