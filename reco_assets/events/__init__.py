"""Synthetic events and MovieLens replay into Kafka."""
