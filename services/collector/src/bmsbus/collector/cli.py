"""`bmsbus` subcommands contributed by the collector distribution."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from . import diag, service, tools

    service.register(sub)
    tools.register(sub)
    diag.register(sub)
