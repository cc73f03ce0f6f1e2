"""The Home Assistant add-on: manifest shape, option schema types, translations, and options -> our Config."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bmsbus.ha_bridge.addon import main, options_to_config
from bmsbus.shared.config import parse_config

ADDON = Path(__file__).resolve().parents[2] / "deploy" / "ha-addon"
# Supervisor's option schema grammar (supervisor/addons/options.py): a type, optionally with a range, `?` = optional.
SCHEMA_TYPE = re.compile(r"^(str(\(\d*,\d*\))?|bool|email|url|port|password|"
                         r"int(\(-?\d*,-?\d*\))?|float(\(-?[\d.]*,-?[\d.]*\))?|"
                         r"match\(.+\)|list\([^|()]+(\|[^|()]+)*\)|device(\(.*\))?)\??$")
ARCHES = {"aarch64", "amd64", "armhf", "armv7", "i386"}
SERVICE_SAMPLE = {"result": "ok", "data": {"host": "core-mosquitto", "port": 1883, "ssl": False,
                                           "protocol": "3.1.1", "username": "addons", "password": "s3cret"}}


def manifest() -> dict[str, Any]:
    return yaml.safe_load((ADDON / "config.yaml").read_text())


def walk_schema(schema: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, type string) of every leaf of an add-on schema."""
    if isinstance(schema, dict):
        return [leaf for k, v in schema.items() for leaf in walk_schema(v, f"{path}.{k}" if path else k)]
    if isinstance(schema, list):
        assert len(schema) == 1, f"{path}: a list schema has exactly one element type"
        return walk_schema(schema[0], f"{path}[]")
    assert isinstance(schema, str), f"{path}: {schema!r}"
    return [(path, schema)]


def test_manifest_required_keys_and_types() -> None:
    m = manifest()
    for key in ("name", "version", "slug", "description", "arch"):
        assert m.get(key), f"config.yaml needs {key}"
    assert isinstance(m["version"], str) and re.fullmatch(r"[a-z0-9_]+", m["slug"])
    assert set(m["arch"]) <= ARCHES
    assert m["startup"] in ("initialize", "system", "services", "application", "once")
    assert m["boot"] in ("auto", "manual")
    assert "mqtt:need" in m["services"]
    assert m["init"] is False  # s6-overlay's /init runs run.sh (bashio, with-contenv)
    leaves = walk_schema(m["schema"])
    for path, kind in leaves:
        assert SCHEMA_TYPE.match(kind), f"schema {path}: {kind!r} is not a Supervisor type"
        if kind.startswith("match("):
            re.compile(kind[6:].rstrip("?")[:-1])
    # Every default option is declared in the schema.
    for key in m["options"]:
        assert key in m["schema"], f"option {key} has no schema"


def test_translations_cover_every_option() -> None:
    en = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())["configuration"]
    schema = manifest()["schema"]
    assert set(en) == set(schema)
    assert all(v.get("name") and v.get("description") for v in en.values())


def test_addon_files() -> None:
    for name in ("Dockerfile", "run.sh", "build.yaml", "DOCS.md", "prepare.sh"):
        assert (ADDON / name).exists(), name
    run = (ADDON / "run.sh").read_text()
    assert "http://supervisor/services/mqtt" in run and "SUPERVISOR_TOKEN" in run and "bmsbus stack" in run
    assert "set -x" not in run  # a trace would log the broker credentials
    subprocess.run(["bash", "-n", str(ADDON / "run.sh")], check=True)
    build = yaml.safe_load((ADDON / "build.yaml").read_text())
    assert set(build["build_from"]) == set(manifest()["arch"])


def test_default_options_map_onto_our_config() -> None:
    cfg = parse_config(options_to_config(manifest()["options"], SERVICE_SAMPLE))
    assert cfg.mqtt is not None and cfg.mqtt.host == "core-mosquitto" and cfg.mqtt.username == "addons"
    assert cfg.mqtt.password.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert str(cfg.aggregator.state_dir) == "/data/state"
    assert cfg.devices[0].type == "jk" and cfg.devices[0].id == "battery1"


def test_full_options_map_onto_our_config() -> None:
    options = {
        "site": "cabin", "topic_root": "bms/v1", "log_level": "debug", "collector_id": "pi4", "sample_period": 2.0,
        "publish_period": 10.0, "discovery_prefix": "ha", "expire_after": 300,
        "devices": [{"type": "jk", "address": "C8:47:8C:00:11:AA", "alias": "Shed 1", "pin": "1234", "debug": True,
                     "current_calibration": 1.02, "invert_current": False, "algorithm": "soc 90% 80%", "note": "",
                     "adapter": "hci0", "keep_alive": True, "sample_period": 5.0},
                    {"type": "simulated", "alias": "sim", "protocol": "jk_32s", "cells": 16, "chemistry": "lfp",
                     "capacity_ah": 280.0, "soc": 50.0}],
        "groups": [{"id": "bank", "name": "Bank", "members": ["shed_1", "sim"], "topology": "parallel"}],
        "mqtt_host": "10.0.0.2", "mqtt_port": 8883, "mqtt_user": "bms", "mqtt_password": "pw",
        "influx_url": "http://influx:8086", "influx_token": "tok", "influx_org": "home", "influx_bucket": "bms",
    }
    cfg = parse_config(options_to_config(options, SERVICE_SAMPLE, data_dir="/tmp/x"))
    assert (cfg.site, cfg.topic_root, cfg.log_level) == ("cabin", "bms/v1", "debug")
    assert (cfg.collector.id, cfg.collector.sample_period, cfg.collector.publish_period) == ("pi4", 2.0, 10.0)
    assert (cfg.ha_bridge.discovery_prefix, cfg.ha_bridge.expire_after) == ("ha", 300)
    assert cfg.mqtt.host == "10.0.0.2" and cfg.mqtt.port == 8883  # explicit options win over the Supervisor
    assert [d.id for d in cfg.devices] == ["shed_1", "sim"] and cfg.devices[0].pin.get_secret_value() == "1234"
    assert cfg.devices[0].note is None  # empty UI strings mean "not set"
    assert cfg.aggregator.groups[0].members == ["shed_1", "sim"]
    assert cfg.influx.url == "http://influx:8086" and cfg.influx.bucket == "bms"


def test_schema_keys_are_all_mapped() -> None:
    """Every option the schema offers reaches the config: a key the mapping ignores would be a silent no-op."""
    schema = manifest()["schema"]
    mapped_top = {"site", "topic_root", "log_level", "collector_id", "sample_period", "publish_period",
                  "discovery_prefix", "expire_after", "devices", "groups", "mqtt_host", "mqtt_port", "mqtt_user",
                  "mqtt_password", "influx_url", "influx_token", "influx_org", "influx_bucket"}
    assert set(schema) == mapped_top
    from bmsbus.ha_bridge.addon import DEVICE_KEYS, GROUP_KEYS
    from bmsbus.shared.config import DeviceConfig, GroupConfig

    assert set(schema["devices"][0]) == set(DEVICE_KEYS) and set(DEVICE_KEYS) <= set(DeviceConfig.model_fields)
    assert set(schema["groups"][0]) == set(GROUP_KEYS) and set(GROUP_KEYS) <= set(GroupConfig.model_fields)


def test_cli_writes_a_private_config(tmp_path: Path) -> None:
    (tmp_path / "options.json").write_text(json.dumps(manifest()["options"]))
    service = tmp_path / "mqtt.json"
    service.write_text(json.dumps(SERVICE_SAMPLE))
    out = tmp_path / "bmsbus.yaml"
    assert main(["--options", str(tmp_path / "options.json"), "--mqtt-service", str(service), "--out", str(out),
                 "--data-dir", str(tmp_path)]) == 0
    assert out.stat().st_mode & 0o077 == 0
    cfg = parse_config(yaml.safe_load(out.read_text()))
    assert cfg.mqtt.host == "core-mosquitto"
    # A bad option fails with the option named, before the stack starts.
    (tmp_path / "options.json").write_text(json.dumps({**manifest()["options"], "site": "bad site"}))
    r = subprocess.run([sys.executable, "-m", "bmsbus.ha_bridge.addon", "--options", str(tmp_path / "options.json"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "site" in r.stderr
