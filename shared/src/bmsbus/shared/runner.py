"""How a service is declared and run: `bmsbus <service> --config FILE [--mqtt URL]`.

Each service distribution exports `SERVICE = ServiceSpec(...)` (entry point group `bmsbus.services`)
and a `register(subparsers)` (group `bmsbus.commands`) that calls `add_service_command`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .config import Config, ConfigError, MqttConfig, load_config

log = logging.getLogger("bmsbus")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # CLI name, e.g. "ha-bridge"
    help: str
    run: Callable[[Config], Awaitable[None]]  # runs until cancelled; cfg.mqtt is always set
    # Extra checks of a config (e.g. device types the collector knows): problems as "field: message".
    check: Callable[[Config], list[str]] | None = None


def installed_services() -> dict[str, ServiceSpec]:
    specs = {}
    for ep in entry_points(group="bmsbus.services"):
        try:
            spec = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken distribution is reported, the rest still run
            log.error("service %r cannot be loaded (%s: %s); running without it", ep.name, type(exc).__name__, exc)
            continue
        specs[spec.name] = spec
    order = ["collector", "aggregator", "ha-bridge", "influx-writer"]
    return dict(sorted(specs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def check_config(cfg: Config) -> None:
    """Runs every installed service's own checks; raises one ConfigError naming all problems."""
    problems = []
    for spec in installed_services().values():
        if spec.check:
            problems += spec.check(cfg)
    if problems:
        raise ConfigError(cfg.source_path or "<config>", problems)


class SecretFilter(logging.Filter):
    """Masks known secret values in every log record, whatever logged them."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "***")
                record.msg, record.args = text, None
        return True


def config_secrets(cfg: Config) -> list[str]:
    out = []
    if cfg.mqtt and cfg.mqtt.password:
        out.append(cfg.mqtt.password.get_secret_value())
    if cfg.influx.token:
        out.append(cfg.influx.token.get_secret_value())
    out += [d.pin.get_secret_value() for d in cfg.devices if d.pin]
    for proxy in cfg.collector.esphome_proxies:
        out += [secret.get_secret_value() for secret in (proxy.noise_psk, proxy.password) if secret]
    return out


def setup_logging(cfg: Config | None, level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    if cfg is not None:
        handler.addFilter(SecretFilter(config_secrets(cfg)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or (cfg.log_level if cfg else "info")).upper())
    for noisy in ("amqtt", "transitions", "bleak", "aioesphomeapi"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_for_run(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if getattr(args, "mqtt", None):
        try:
            cfg.mqtt = MqttConfig.from_url(args.mqtt)
        except ValueError as exc:
            raise ConfigError("--mqtt", [str(exc)]) from None
    check_config(cfg)
    return cfg


def run_main(main: Coroutine[Any, Any, None]) -> int:
    """asyncio.run with SIGTERM treated like Ctrl-C: the main task is cancelled and cleans up."""

    async def wrapper() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await main
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(wrapper())
    return 0


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the bmsbus YAML config file")
    p.add_argument("--mqtt", help="broker URL mqtt://[user:pass@]host:port; overrides the config's mqtt")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def add_service_command(sub: argparse._SubParsersAction, spec: ServiceSpec) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(spec.name, help=spec.help)
    add_common_args(p)

    def run(args: argparse.Namespace) -> int:
        cfg = load_for_run(args)
        setup_logging(cfg, args.log_level)
        if cfg.mqtt is None:
            raise ConfigError(cfg.source_path or args.config,
                              [f"mqtt: {spec.name} needs a broker: set `mqtt:` in the config or pass --mqtt "
                               "(only `bmsbus stack` starts an embedded one)"])
        return run_main(spec.run(cfg))

    p.set_defaults(func=run)
