"""Kafka: the local broker, Maven-resolved jars, the connection resource and offset look-ups."""
