"""Benchmarks of the generated service against bare baselines: `python -m bench.run`."""
