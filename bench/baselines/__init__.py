"""Baselines the generated service is measured against (see bench/run.py)."""
