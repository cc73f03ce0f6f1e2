"""Home Assistant add-on options (`/data/options.json`) -> a bmsbus config (`bmsbus stack --config`).

The add-on's option schema (deploy/ha-addon/config.yaml) mirrors our Config; this module is the only place
that knows the differences:
- the broker comes from the Supervisor's MQTT service (`GET http://supervisor/services/mqtt`), unless the
  user filled in `mqtt_host` (then `mqtt_port`/`mqtt_user`/`mqtt_password` too);
- aggregator state (persisted meters and runtime settings) lives under `/data`, which the Supervisor keeps
  across updates; raw captures go to the add-on's config folder (`/config`, on the host
  `/addon_configs/<slug>/`), where the user can pick them up;
- empty strings and nulls from the add-on UI mean "not set";
- what the UI does not offer (`NOT_OFFERED`: charge-control curves, cell states, actions, alarms, TLS, ...)
  goes into an optional YAML file, `config_file`, merged over the options: mappings key by key, anything else
  (a list such as `devices`) replaced whole.

    curl -fsS -H "Authorization: Bearer $SUPERVISOR_TOKEN" http://supervisor/services/mqtt \
      | python3 -m bmsbus.ha_bridge.addon --options /data/options.json --mqtt-service - --out /data/bmsbus.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from bmsbus.shared.config import ConfigError, parse_config

DEVICE_KEYS: Final = ("type", "address", "alias", "id", "pin", "adapter", "debug", "current_calibration",
                      "invert_current", "algorithm", "note", "sample_period", "publish_period", "keep_alive",
                      "transport", "proxy", "capture", "protocol", "cells", "chemistry", "capacity_ah", "soc")
GROUP_KEYS: Final = ("id", "name", "members", "topology", "algorithm")
PROXY_KEYS: Final = ("host", "port", "name", "noise_psk", "password")

# Option -> the config field it sets (dotted path); pydantic converts the values when the config is parsed.
SCALARS: Final[Mapping[str, str]] = {
    "site": "site", "topic_root": "topic_root", "log_level": "log_level",
    "collector_id": "collector.id", "sample_period": "collector.sample_period",
    "publish_period": "collector.publish_period", "concurrent_sampling": "collector.concurrent_sampling",
    "bt_power_cycle": "collector.bt_power_cycle",
    # the values HA's setting numbers start from (aggregator.charge_control)
    "charge_control": "aggregator.charge_control.enabled",
    "max_charge_current": "aggregator.charge_control.max_charge_current",
    "max_discharge_current": "aggregator.charge_control.max_discharge_current",
    "min_cell_voltage": "aggregator.charge_control.min_cell_voltage",
    "max_cell_voltage": "aggregator.charge_control.max_cell_voltage",
    "float_cell_voltage": "aggregator.charge_control.float_cell_voltage",
    "discovery_prefix": "ha_bridge.discovery_prefix", "expire_after": "ha_bridge.expire_after",
    "influx_url": "influx.url", "influx_token": "influx.token", "influx_org": "influx.org",
    "influx_bucket": "influx.bucket",
}
# List options: option -> (config field, the keys of one entry).
LISTS: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "devices": ("devices", DEVICE_KEYS), "groups": ("aggregator.groups", GROUP_KEYS),
    "esphome_proxies": ("collector.esphome_proxies", PROXY_KEYS)}
# Used only when mqtt_host is set; otherwise the Supervisor's MQTT service is the broker.
MQTT: Final[Mapping[str, str]] = {"mqtt_host": "mqtt.host", "mqtt_port": "mqtt.port", "mqtt_user": "mqtt.username",
                                  "mqtt_password": "mqtt.password"}
OPTION_PATHS: Final[Mapping[str, str | None]] = {
    **SCALARS, **{k: path for k, (path, _) in LISTS.items()}, **MQTT, "config_file": None}
ADDON_DEFAULTS: Final[Mapping[str, Any]] = {"collector.id": "ha-addon"}

# Config fields the add-on UI does not offer, with the reason; all of them can be set in `config_file`.
# tests/ha_bridge/test_ha_addon.py fails when a config field is neither offered nor listed here.
NOT_OFFERED: Final[Mapping[str, str]] = {
    "mqtt.tls": "the Supervisor's service says whether the broker uses TLS; client certificates: config_file",
    "mqtt.keepalive": "rarely changed",
    "mqtt.ack_after_processing": "right for the Mosquitto add-on (on); config_file to change it",
    "devices[].options": "protocol-specific mapping; the UI cannot type it",
    "collector.spool_dir": "the broker runs next to the add-on; config_file for a remote one",
    "collector.spool_max_bytes": "with spool_dir",
    "collector.capture_dir": "set by the add-on (/config/captures) when a device has capture on",
    "collector.capture_max_bytes": "rarely changed",
    "collector.capture_keep": "rarely changed",
    "collector.http": "health endpoint; the Supervisor watches the process instead",
    "collector.bt_power_cycle_command": "the default (bluetoothctl) fits HA OS",
    "aggregator.state_dir": "set by the add-on (/data/state)",
    "aggregator.dt_max": "rarely changed",
    "aggregator.timeout": "rarely changed",
    "aggregator.reorder_window": "rarely changed",
    "aggregator.publish_interval": "rarely changed",
    "aggregator.snapshot_interval": "rarely changed",
    "aggregator.fsync_journal": "rarely changed",
    "aggregator.charge_control": "the main values are options (SCALARS); curves, timers and the rest: config_file",
    "aggregator.charge_control_overrides": "per pack or group: config_file",
    "aggregator.cell_states": "rules with actions: config_file",
    "aggregator.scripts_dir": "config_file",
    "aggregator.script_timeout": "config_file",
    "aggregator.alarms": "webhooks: config_file",
    "ha_bridge.enabled": "always on in the add-on",
    "ha_bridge.birth_topic": "HA's own, fixed",
    "ha_bridge.republish_jitter": "rarely changed",
    "ha_bridge.command_expiry": "rarely changed",
    "ha_bridge.remove_stale": "always on in the add-on",
    "ha_bridge.settle_time": "rarely changed",
    "influx.measurement_prefix": "rarely changed",
    "influx.batch_size": "rarely changed",
    "influx.flush_interval": "rarely changed",
}


def _set(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _pick(d: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d and _set(d[k])}


def _put(cfg: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        cfg = cfg.setdefault(part, {})
    cfg[leaf] = value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merged key by key, anything else (lists included) replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def mqtt_from_service(service: Mapping[str, Any]) -> dict[str, Any]:
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


def options_to_config(options: Mapping[str, Any], mqtt_service: Mapping[str, Any] | None = None,
                      data_dir: str = "/data", config_dir: str = "/config",
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bmsbus config (a dict for `parse_config`) for one set of add-on options, `extra` (the parsed
    `config_file`) merged over it."""
    cfg: dict[str, Any] = {"devices": [], "aggregator": {"state_dir": str(Path(data_dir) / "state"), "groups": []}}
    for path, value in ADDON_DEFAULTS.items():
        _put(cfg, path, value)
    for option, path in SCALARS.items():
        if _set(options.get(option)):
            _put(cfg, path, options[option])
    for option, (path, keys) in LISTS.items():
        entries = [_pick(entry, keys) for entry in options.get(option) or []]
        if entries or path in ("devices", "aggregator.groups"):
            _put(cfg, path, entries)
    if any(d.get("capture") for d in cfg["devices"]):
        _put(cfg, "collector.capture_dir", str(Path(config_dir) / "captures"))
    if _set(options.get("mqtt_host")):
        for option, path in MQTT.items():
            if _set(options.get(option)):
                _put(cfg, path, options[option])
    elif mqtt_service:
        cfg["mqtt"] = mqtt_from_service(mqtt_service)
    return merge(cfg, extra) if extra else cfg


def read_config_file(path: str) -> dict[str, Any]:
    """The `config_file` option: a YAML mapping, or ValueError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"config_file {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config_file {path}: not YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config_file {path}: must be a mapping of bmsbus settings, got {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bmsbus.ha_bridge.addon", description=__doc__.splitlines()[0])
    p.add_argument("--options", default="/data/options.json")
    p.add_argument("--mqtt-service", help="the Supervisor's /services/mqtt JSON: a file, or - for stdin")
    p.add_argument("--out", default="/data/bmsbus.yaml")
    p.add_argument("--data-dir", default="/data")
    p.add_argument("--config-dir", default="/config", help="the add-on's config folder (addon_config map)")
    p.add_argument("--require-mqtt", action="store_true",
                   help="fail unless a broker is known (Supervisor service, mqtt_host or config_file): inside the "
                   "add-on an embedded broker would be out of Home Assistant's reach")
    args = p.parse_args(argv)
    options = json.loads(Path(args.options).read_text())
    service = None
    if args.mqtt_service:
        text = sys.stdin.read() if args.mqtt_service == "-" else Path(args.mqtt_service).read_text()
        service = json.loads(text) if text.strip() else None
    try:
        extra = read_config_file(options["config_file"]) if _set(options.get("config_file")) else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    cfg = options_to_config(options, service, args.data_dir, args.config_dir, extra)
    if args.require_mqtt and not cfg.get("mqtt"):
        print("no MQTT broker: install the Mosquitto broker add-on (and the MQTT integration) or set mqtt_host",
              file=sys.stderr)
        return 2
    try:
        parse_config(cfg, args.options)  # fail here, naming the option, rather than in the stack
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out = Path(args.out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the broker password
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.chmod(out, 0o600)  # an existing file keeps its mode through O_CREAT
    print(f"bmsbus add-on: {len(cfg['devices'])} devices, {len(cfg['aggregator']['groups'])} groups, "
          f"broker {cfg.get('mqtt', {}).get('host', 'embedded')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
