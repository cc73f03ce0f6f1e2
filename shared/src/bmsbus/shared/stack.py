"""`bmsbus stack`: every installed service in one process, with an embedded broker if none is configured."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from .broker import embedded_broker
from .config import Config
from .runner import add_common_args, installed_services, load_for_run, run_main, setup_logging

log = logging.getLogger("bmsbus.stack")


async def run_stack(cfg: Config, *, broker_port: int = 1883, view: bool = False,
                    only: list[str] | None = None) -> None:
    services = installed_services()
    if only:
        services = {k: v for k, v in services.items() if k in only}
    async with contextlib.AsyncExitStack() as stack:
        if cfg.mqtt is None:
            cfg.mqtt = await stack.enter_async_context(embedded_broker("127.0.0.1", broker_port))
        log.info("running %s against %s", ", ".join(services), cfg.mqtt.display())
        async with asyncio.TaskGroup() as tg:
            for name, spec in services.items():
                tg.create_task(spec.run(cfg), name=name)
            if view:
                from .view import run_view

                tg.create_task(run_view(cfg), name="view")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stack", help="run every installed service in one process")
    add_common_args(p)
    p.add_argument("--broker-port", type=int, default=1883, help="port of the embedded broker (default 1883)")
    p.add_argument("--view", action="store_true", help="show a live terminal view of every pack")
    p.add_argument("--only", action="append", help="run only this service (repeatable)")

    def run(args: argparse.Namespace) -> int:
        cfg = load_for_run(args)
        # With the live view on, logs go quiet so the view stays readable; errors still show.
        setup_logging(cfg, args.log_level or ("warning" if args.view else None))
        return run_main(run_stack(cfg, broker_port=args.broker_port, view=args.view, only=args.only))

    p.set_defaults(func=run)
