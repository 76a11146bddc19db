"""Producers: everything that puts telemetry on Kafka (collector, Identity Server producer, simulator)."""
