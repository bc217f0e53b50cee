"""The Kafka resource's settings as the clients read them."""

import pytest

from reco_assets.kafka.client import KafkaResource

NASTY = ['p"; x="y', 'back\\slash"', "semi;colon required", "two\nlines\rand\ttab", "\\\"", "ünïcode 🔑", ""]


@pytest.mark.parametrize("password", NASTY)
def test_sasl_jaas_config_means_what_it_says(spark, password):
    """Spark's Kafka source passes `kafka.sasl.jaas.config` to Kafka's own JaasConfig parser (from the kafka-clients
    jar on the session's class path): it must read back exactly one login module with exactly these options."""
    kafka = KafkaResource(sasl_mechanism="SCRAM-SHA-512", sasl_username=f"user {password}",
                          sasl_password=password, security_protocol="SASL_SSL")
    jaas = kafka.spark_options()["kafka.sasl.jaas.config"]
    config = spark.sparkContext._jvm.org.apache.kafka.common.security.JaasConfig("KafkaClient", jaas)
    (entry,) = config.getAppConfigurationEntry("KafkaClient")
    assert entry.getLoginModuleName() == "org.apache.kafka.common.security.scram.ScramLoginModule"
    assert dict(entry.getOptions()) == {"username": f"user {password}", "password": password}
