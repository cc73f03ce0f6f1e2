"""The `bmsbus` command. Subcommands come from the installed distributions (entry point group
`bmsbus.commands`), so a Raspberry Pi with only the collector installed has only its commands."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import distributions, entry_points

from .config import ConfigError, load_config


def _versions() -> str:
    found = sorted((d.metadata["Name"], d.version) for d in distributions()
                   if (d.metadata["Name"] or "").startswith("bmsbus-"))
    return "bmsbus " + ", ".join(f"{n.removeprefix('bmsbus-')} {v}" for n, v in found)


def register_config(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="check a config, or import one from batmon-ha")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file; prints one line per problem")
    check.add_argument("file")
    check.set_defaults(func=_config_check)
    imp = csub.add_parser("import-batmon", help="print the bmsbus YAML equivalent of a batmon-ha options.json")
    imp.add_argument("file")
    imp.set_defaults(func=_config_import)


def _config_check(args: argparse.Namespace) -> int:
    from .runner import check_config

    cfg = load_config(args.file)
    check_config(cfg)
    print(f"{args.file}: ok ({len(cfg.devices)} devices, {len(cfg.aggregator.groups)} groups, "
          f"broker {cfg.mqtt.display() if cfg.mqtt else 'embedded'})")
    return 0


def _config_import(args: argparse.Namespace) -> int:
    from .batmon_import import import_batmon

    sys.stdout.write(import_batmon(args.file))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmsbus", description="BMS monitoring and control over MQTT")
    parser.add_argument("--version", action="version", version=_versions())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in sorted(entry_points(group="bmsbus.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001 - one broken distribution must not take every command down
            print(f"bmsbus: the {ep.name!r} commands are unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
