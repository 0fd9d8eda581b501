"""Helpers the tests and benchmarks share: paths, isolated topics, servers, clients, media."""
