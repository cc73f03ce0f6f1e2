"""`bmsbus config import-batmon options.json`: a batmon-ha add-on config as a bmsbus YAML config.

Mapping (batmon-ha 2.x options): devices keep their fields; `address: serial` devices take their port
from `adapter`; `group_parallel` entries become aggregator groups; broker, sample/publish periods,
keep_alive and the InfluxDB v1 sink carry over. batmon's `invert_current` exists to turn its internal
"+ = discharge" into "+ = charging"; bmsbus is "+ = charging" everywhere, so it is not carried over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, parse_config
from .topics import slug

DEVICE_FIELDS = ("type", "address", "alias", "pin", "adapter", "debug", "current_calibration", "algorithm", "note")


def convert(options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(bmsbus config dict, notes for the user)."""
    notes: list[str] = []
    cfg: dict[str, Any] = {"site": "home"}
    host = options.get("mqtt_broker")
    if host:
        h, _, p = str(host).partition(":")
        mqtt: dict[str, Any] = {"host": h, "port": int(p or options.get("mqtt_port") or 1883)}
        if options.get("mqtt_user"):
            mqtt["username"] = options["mqtt_user"]
        if options.get("mqtt_password"):
            mqtt["password"] = options["mqtt_password"]
        cfg["mqtt"] = mqtt
    collector: dict[str, Any] = {}
    if "sample_period" in options:
        collector["sample_period"] = float(options["sample_period"])
    if options.get("publish_period"):
        collector["publish_period"] = float(options["publish_period"])
    if collector:
        cfg["collector"] = collector

    devices: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for i, dev in enumerate(options.get("devices") or []):
        address = str(dev.get("address", ""))
        if address.startswith("#"):
            notes.append(f"devices[{i}] ({address}) is disabled in batmon-ha; left out")
            continue
        if dev.get("type") == "group_parallel":
            members = [slug(m) for m in address.split(",") if m.strip()]
            groups.append({"id": slug(dev.get("alias") or f"group{len(groups) + 1}"), "members": members,
                           "topology": "parallel"})
            continue
        out = {k: dev[k] for k in DEVICE_FIELDS if k in dev and dev[k] not in (None, "")}
        if address == "serial":
            out["address"] = dev.get("adapter")
            out.pop("adapter", None)
        if "keep_alive" in options and "keep_alive" not in out:
            out["keep_alive"] = bool(options["keep_alive"])
        devices.append(out)
    # Group members in batmon are aliases or MACs; ours are device ids (slug of alias or address).
    ids = {slug(d.get("alias") or d.get("address") or ""): d for d in devices}
    by_address = {slug(str(d.get("address"))): slug(d.get("alias") or d.get("address") or "") for d in devices}
    for g in groups:
        g["members"] = [m if m in ids else by_address.get(m, m) for m in g["members"]]
    cfg["devices"] = devices
    if groups:
        cfg["aggregator"] = {"groups": groups}

    if options.get("influxdb_host"):
        scheme = "https" if options.get("influxdb_ssl") else "http"
        user, pw = options.get("influxdb_username") or "", options.get("influxdb_password") or ""
        cfg["influx"] = {"url": f"{scheme}://{options['influxdb_host']}:8086",
                         "token": f"{user}:{pw}", "org": "-",
                         "bucket": f"{options.get('influxdb_database') or 'batmon'}/autogen"}
        notes.append("InfluxDB: bmsbus writes through the v2 API, which InfluxDB >= 1.8 accepts with "
                     "token 'user:password' and bucket 'database/retention'")
    if "invert_current" in options:
        notes.append("invert_current: not carried over; bmsbus reports current positive while charging")
    for key in ("bt_power_cycle", "concurrent_sampling", "ble_stack", "bluetooth_proxies", "watchdog",
                "expire_values_after", "telemetry"):
        if key in options:
            notes.append(f"{key}: not carried over automatically; see docs/configuration.md")
    return cfg, notes


def import_batmon(path: str | Path) -> str:
    p = Path(path)
    try:
        options = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(p, [f"cannot read: {exc.strerror}"]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(p, [f"not JSON: {exc.msg} at line {exc.lineno}"]) from None
    if not isinstance(options, dict):
        raise ConfigError(p, ["<top level>: a batmon-ha options.json is a JSON object"])
    cfg, notes = convert(options)
    parse_config(cfg, f"{p} (converted)")  # the output must itself be a valid bmsbus config
    header = "".join(f"# note: {n}\n" for n in notes)
    return f"# bmsbus config imported from {p.name}\n{header}" + yaml.safe_dump(cfg, sort_keys=False)
