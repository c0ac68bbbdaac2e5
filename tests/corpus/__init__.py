"""The exporter corpus: tiny transformers models exported every standard way (see build.py)."""
