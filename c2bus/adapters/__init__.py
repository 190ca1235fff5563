"""Adapters shared by the services: settings, Kafka clients and topics, dead letters, auth,
metrics, ops endpoints, lifecycle, and the policy versions on Kafka."""
