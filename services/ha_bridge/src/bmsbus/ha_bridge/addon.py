"""Home Assistant add-on options (`/data/options.json`) -> a bmsbus config (`bmsbus stack --config`).

The add-on's option schema (deploy/ha-addon/config.yaml) mirrors our Config closely; this module is the only
place that knows the differences:
- the broker comes from the Supervisor's MQTT service (`GET http://supervisor/services/mqtt`), unless the
  user filled in `mqtt_host` (then `mqtt_port`/`mqtt_user`/`mqtt_password` too);
- aggregator state (persisted meters) lives under `/data`, which the Supervisor keeps across updates;
- empty strings and nulls from the add-on UI mean "not set".

    curl -fsS -H "Authorization: Bearer $SUPERVISOR_TOKEN" http://supervisor/services/mqtt \
      | python3 -m bmsbus.ha_bridge.addon --options /data/options.json --mqtt-service - --out /data/bmsbus.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bmsbus.shared.config import ConfigError, parse_config

DEVICE_KEYS = ("type", "address", "alias", "id", "pin", "adapter", "debug", "current_calibration", "invert_current",
               "algorithm", "note", "sample_period", "keep_alive", "protocol", "cells", "chemistry", "capacity_ah",
               "soc")
GROUP_KEYS = ("id", "name", "members", "topology")


def _set(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d and _set(d[k])}


def mqtt_from_service(service: dict[str, Any]) -> dict[str, Any]:
    """The Supervisor's `/services/mqtt` answer (`{"data": {...}}` or its `data`) -> our `mqtt:` section."""
    data = service.get("data", service)
    out: dict[str, Any] = {"host": data["host"], "port": int(data.get("port", 1883))}
    if data.get("username"):
        out["username"] = data["username"]
    if data.get("password"):
        out["password"] = data["password"]
    if data.get("ssl"):
        out["tls"] = {}
    return out


def options_to_config(options: dict[str, Any], mqtt_service: dict[str, Any] | None = None,
                      data_dir: str = "/data") -> dict[str, Any]:
    """The bmsbus config (a dict for `parse_config`) for one set of add-on options."""
    cfg: dict[str, Any] = {
        "site": options.get("site") or "home",
        "log_level": options.get("log_level") or "info",
        "collector": {"id": options.get("collector_id") or "ha-addon",
                      "sample_period": float(options.get("sample_period") or 1.0)},
        "devices": [_pick(d, DEVICE_KEYS) for d in options.get("devices") or []],
        "aggregator": {"state_dir": str(Path(data_dir) / "state"),
                       "groups": [_pick(g, GROUP_KEYS) for g in options.get("groups") or []]},
        "ha_bridge": {"discovery_prefix": options.get("discovery_prefix") or "homeassistant",
                      "expire_after": int(options.get("expire_after", 120))},
    }
    if _set(options.get("topic_root")):
        cfg["topic_root"] = options["topic_root"]
    if _set(options.get("publish_period")):
        cfg["collector"]["publish_period"] = float(options["publish_period"])
    if _set(options.get("mqtt_host")):
        mqtt: dict[str, Any] = {"host": options["mqtt_host"], "port": int(options.get("mqtt_port") or 1883)}
        if _set(options.get("mqtt_user")):
            mqtt["username"] = options["mqtt_user"]
        if _set(options.get("mqtt_password")):
            mqtt["password"] = options["mqtt_password"]
        cfg["mqtt"] = mqtt
    elif mqtt_service:
        cfg["mqtt"] = mqtt_from_service(mqtt_service)
    if _set(options.get("influx_url")):
        cfg["influx"] = {"url": options["influx_url"],
                         **{k: options[f"influx_{k}"] for k in ("token", "org", "bucket")
                            if _set(options.get(f"influx_{k}"))}}
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bmsbus.ha_bridge.addon", description=__doc__.splitlines()[0])
    p.add_argument("--options", default="/data/options.json")
    p.add_argument("--mqtt-service", help="the Supervisor's /services/mqtt JSON: a file, or - for stdin")
    p.add_argument("--out", default="/data/bmsbus.yaml")
    p.add_argument("--data-dir", default="/data")
    args = p.parse_args(argv)
    options = json.loads(Path(args.options).read_text())
    service = None
    if args.mqtt_service:
        text = sys.stdin.read() if args.mqtt_service == "-" else Path(args.mqtt_service).read_text()
        service = json.loads(text) if text.strip() else None
    cfg = options_to_config(options, service, args.data_dir)
    try:
        parse_config(cfg, args.options)  # fail here, naming the option, rather than in the stack
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out = Path(args.out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the broker password
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    print(f"bmsbus add-on: {len(cfg['devices'])} devices, {len(cfg['aggregator']['groups'])} groups, "
          f"broker {cfg.get('mqtt', {}).get('host', 'embedded')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
