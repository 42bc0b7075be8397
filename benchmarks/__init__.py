"""Benchmark runner: jointserve against its baselines, with an external load generator."""
