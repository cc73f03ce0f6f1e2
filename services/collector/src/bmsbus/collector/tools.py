"""User tools that need no broker: `bmsbus decode` and `bmsbus simulate`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `decode` and `simulate` (written with the JK family work)."""
