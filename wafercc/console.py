"""The rich console every command prints with: a base utility any layer may use (it imports no
wafercc module), so the target and verifier reports need not reach up into the summary code."""
from __future__ import annotations


def make_console():
    """A rich console; 120 columns when stdout is not a terminal (pipes, tests)."""
    import sys

    from rich.console import Console

    width = None if sys.stdout.isatty() else 120
    return Console(highlight=False, width=width)
