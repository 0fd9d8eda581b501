"""Benchmarks: run each as `python -m bench.NAME` from the repository root; each prints ratios
against a baseline measured in the same run."""
