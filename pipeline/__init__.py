"""Shared core: settings, Kafka clients, wire format, tiling, embedded broker."""
