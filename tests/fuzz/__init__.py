"""Hypothesis strategies shared by the fuzz tests (configs and options: config_strategies.py)."""
