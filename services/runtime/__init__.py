"""Adapters shared by the services: settings, Kafka clients and topics, the local broker."""
