"""Shared core: settings, Kafka clients, wire format, codecs, tiling, transforms, offsets; the local stack in `local`."""
