"""The Home Assistant add-on, checked offline: the manifest and options as the Supervisor validates them,
translations, the files the image is built from, options -> our Config (every config field offered or listed
as not offered), and the run script itself starting `bmsbus stack` against a real Mosquitto with the broker the
(stubbed) Supervisor service API names. No Docker: the image build is not exercised here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bmsbus.ha_bridge.addon import (LISTS, MQTT, NOT_OFFERED, OPTION_PATHS, SCALARS, main, merge, options_to_config)
from bmsbus.shared.config import Config, parse_config

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "deploy" / "ha-addon"
# The Supervisor's option grammar (supervisor/addons/options.py, RE_SCHEMA_ELEMENT): ranges take no sign.
SCHEMA_TYPE = re.compile(r"^(bool|email|url|port|device(\(subsystem=[a-z]+\))?|str(\(\d*,\d*\))?|"
                         r"password(\(\d*,\d*\))?|int(\(\d*,\d*\))?|float(\([\d.]*,[\d.]*\))?|"
                         r"match\(.*\)|list\(.+\))\??$")
ARCHES = {"aarch64", "amd64", "armhf", "armv7", "i386"}
MAP_TYPES = {"addon_config", "all_addon_configs", "homeassistant_config", "ssl", "addons", "backup", "share", "media"}
SERVICE_SAMPLE = {"result": "ok", "data": {"host": "core-mosquitto", "port": 1883, "ssl": False,
                                           "protocol": "3.1.1", "username": "addons", "password": "s3cret"}}
FULL_OPTIONS: dict[str, Any] = {
    "site": "cabin", "topic_root": "bms/v1", "log_level": "debug", "collector_id": "pi4", "sample_period": 2.0,
    "publish_period": 10.0, "concurrent_sampling": False, "bt_power_cycle": 5, "discovery_prefix": "ha",
    "expire_after": 300,
    "devices": [{"type": "jk", "address": "C8:47:8C:00:11:AA", "alias": "Shed 1", "pin": "1234", "debug": True,
                 "current_calibration": 1.02, "invert_current": False, "algorithm": "soc 90% 80%", "note": "",
                 "adapter": "hci0", "keep_alive": True, "sample_period": 5.0, "publish_period": 10.0,
                 "transport": "esphome", "proxy": "garage", "capture": True},
                {"type": "simulated", "alias": "sim", "protocol": "jk_32s", "cells": 16, "chemistry": "lfp",
                 "capacity_ah": 280.0, "soc": 50.0}],
    "groups": [{"id": "bank", "name": "Bank", "members": ["shed_1", "sim"], "topology": "parallel",
                "algorithm": "soc 95% 85%"}],
    "esphome_proxies": [{"host": "10.0.0.7", "port": 6053, "name": "garage", "noise_psk": "a2V5", "password": ""}],
    "charge_control": True, "max_charge_current": 80.0, "max_discharge_current": 120.0, "min_cell_voltage": 3.0,
    "max_cell_voltage": 3.5, "float_cell_voltage": 3.4,
    "mqtt_host": "10.0.0.2", "mqtt_port": 8883, "mqtt_user": "bms", "mqtt_password": "pw",
    "influx_url": "http://influx:8086", "influx_token": "tok", "influx_org": "home", "influx_bucket": "bms",
    "config_file": "/config/bmsbus.yaml",
}


def manifest() -> dict[str, Any]:
    return yaml.safe_load((ADDON / "config.yaml").read_text())


# --- the Supervisor's view of the options --------------------------------------------------------------

def supervisor_check(schema: Any, value: Any, where: str = "options") -> None:
    """What the Supervisor does with options.json against the schema (supervisor/addons/options.py), reduced
    to what can go wrong for us: a missing required option, a null, a value of the wrong type or range."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: must be a mapping"
        for key, sub in value.items():
            if key in schema:  # unknown options are dropped with a warning
                supervisor_check(schema[key], sub, f"{where}.{key}")
        for key in set(schema) - set(value):
            element = schema[key][0] if isinstance(schema[key], list) and schema[key] else schema[key]
            assert isinstance(element, str) and element.endswith("?"), f"{where}: missing required option {key}"
        return
    if isinstance(schema, list):
        assert isinstance(value, list), f"{where}: must be a list"
        for i, item in enumerate(value):
            supervisor_check(schema[0], item, f"{where}[{i}]")
        return
    assert value is not None, f"{where}: null is 'missing required option' to the Supervisor"
    kind = schema.rstrip("?")
    m = re.match(r"^(\w+)(?:\((.*)\))?$", kind)
    assert m, f"{where}: {schema}"
    name, arg = m.groups()
    if name in ("int", "float") and arg:
        lo, hi = (float(x) if x else None for x in arg.split(","))
        number = int(value) if name == "int" else float(value)
        assert (lo is None or number >= lo) and (hi is None or number <= hi), f"{where}: {value} outside {arg}"
    elif name == "bool":
        assert isinstance(value, bool), f"{where}: not a bool"
    elif name == "port":
        assert isinstance(value, int) and 1 <= value <= 65535, f"{where}: not a port"
    elif name == "match":
        assert re.fullmatch(arg, str(value)), f"{where}: {value!r} does not match {arg}"
    elif name == "list":
        assert str(value) in arg.split("|"), f"{where}: {value!r} not in {arg}"
    elif name == "url":
        assert re.match(r"^https?://[^/]+", str(value)), f"{where}: not a URL"


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
    assert m["host_dbus"] is True  # bleak -> the host's BlueZ
    for entry in m.get("map", []):
        assert entry.split(":")[0] in MAP_TYPES and entry.split(":")[1:] in ([], ["rw"], ["ro"]), entry
    assert "addon_config:rw" in m["map"]  # /config: config_file and captures
    for path, kind in walk_schema(m["schema"]):
        assert SCHEMA_TYPE.match(kind), f"schema {path}: {kind!r} is not a Supervisor type"
        if kind.startswith("match("):
            re.compile(kind.rstrip("?")[6:-1])
    for key in m["options"]:
        assert key in m["schema"], f"option {key} has no schema"


def test_supervisor_accepts_the_default_and_a_full_example() -> None:
    schema = manifest()["schema"]
    supervisor_check(schema, manifest()["options"])
    supervisor_check(schema, FULL_OPTIONS)
    assert set(FULL_OPTIONS) == set(schema), "the full example uses every option"
    # The checker is not a rubber stamp.
    for bad in ({**FULL_OPTIONS, "expire_after": 99999}, {**FULL_OPTIONS, "site": "a b"},
                {k: v for k, v in FULL_OPTIONS.items() if k != "devices"}, {**FULL_OPTIONS, "mqtt_user": None},
                {**FULL_OPTIONS, "groups": [{"id": "g"}]}):
        with pytest.raises(AssertionError):
            supervisor_check(schema, bad)


def test_translations_cover_every_option() -> None:
    en = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())["configuration"]
    schema = manifest()["schema"]
    assert set(en) == set(schema)
    assert all(v.get("name") and v.get("description") for v in en.values())  # the Supervisor requires name


def test_image_files() -> None:
    for name in ("Dockerfile", "run.sh", "build.yaml", "DOCS.md", "prepare.sh"):
        assert (ADDON / name).exists(), name
    run = (ADDON / "run.sh").read_text()
    assert run.startswith("#!/usr/bin/with-contenv bashio\n")
    assert "http://supervisor/services/mqtt" in run and "SUPERVISOR_TOKEN" in run and "bmsbus stack" in run
    assert "set -x" not in run  # a trace would log the broker credentials
    subprocess.run(["bash", "-n", str(ADDON / "run.sh")], check=True)
    subprocess.run(["sh", "-n", str(ADDON / "prepare.sh")], check=True)
    for script in ("run.sh", "prepare.sh"):
        assert os.access(ADDON / script, os.X_OK), f"{script} is not executable"
        mode = subprocess.run(["git", "ls-files", "-s", f"deploy/ha-addon/{script}"], cwd=REPO, capture_output=True,
                              text=True).stdout.split()[:1]
        assert mode in ([], ["100755"]), f"{script} is committed without its executable bit"
    build = yaml.safe_load((ADDON / "build.yaml").read_text())
    assert set(build["build_from"]) == set(manifest()["arch"])
    # The image installs every distribution of the repository (prepare.sh copies shared/ and services/*).
    dockerfile = (ADDON / "Dockerfile").read_text()
    assert "ARG BUILD_FROM" in dockerfile and 'CMD ["/run.sh"]' in dockerfile
    installed = set(re.findall(r"/opt/bmsbus-src/([\w/]+)", dockerfile)) - {""}
    distributions = {str(p.parent.relative_to(REPO)) for p in [REPO / "shared" / "pyproject.toml",
                                                                *REPO.glob("services/*/pyproject.toml")]}
    assert installed == distributions


def test_default_options_map_onto_our_config() -> None:
    cfg = parse_config(options_to_config(manifest()["options"], SERVICE_SAMPLE))
    assert cfg.mqtt is not None and cfg.mqtt.host == "core-mosquitto" and cfg.mqtt.username == "addons"
    assert cfg.mqtt.password.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert str(cfg.aggregator.state_dir) == "/data/state"
    assert cfg.devices[0].type == "jk" and cfg.devices[0].id == "battery1"
    assert cfg.collector.id == "ha-addon" and cfg.collector.capture_dir is None


def get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj.get_secret_value() if hasattr(obj, "get_secret_value") else obj


def test_full_options_map_onto_our_config() -> None:
    extra = {"aggregator": {"charge_control": {"bulk_soc": None, "float_after": 600.0}},
             "collector": {"http": {"port": 0}}, "influx": {"measurement_prefix": "bms_"}}
    cfg = parse_config(options_to_config(FULL_OPTIONS, SERVICE_SAMPLE, data_dir="/tmp/x", extra=extra))
    # Every scalar option lands on the field OPTION_PATHS names, with its value.
    for option, path in {**SCALARS, **MQTT}.items():
        assert get(cfg, path) == FULL_OPTIONS[option], (option, path)
    assert cfg.mqtt.host == "10.0.0.2"  # type: ignore[union-attr]  # explicit options win over the Supervisor
    assert [d.id for d in cfg.devices] == ["shed_1", "sim"] and cfg.devices[0].pin.get_secret_value() == "1234"
    assert (cfg.devices[0].transport, cfg.devices[0].proxy, cfg.devices[0].capture) == ("esphome", "garage", True)
    assert cfg.devices[0].note is None  # empty UI strings mean "not set"
    assert str(cfg.collector.capture_dir) == "/config/captures"
    assert cfg.aggregator.groups[0].members == ["shed_1", "sim"] and cfg.aggregator.groups[0].algorithm
    proxy = cfg.collector.esphome_proxies[0]
    assert (proxy.host, proxy.name, proxy.noise_psk.get_secret_value(), proxy.password) == (  # type: ignore[union-attr]
        "10.0.0.7", "garage", "a2V5", None)
    # config_file: merged key by key, so the options' charge control values stay next to the file's.
    cc = cfg.aggregator.charge_control
    assert (cc.max_cell_voltage, cc.bulk_soc, cc.float_after) == (3.5, None, 600.0)
    assert cfg.collector.http is not None and cfg.influx.measurement_prefix == "bms_" and cfg.influx.bucket == "bms"


def test_config_file_lists_replace_and_mappings_merge() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"c": 3}, "l": [9]}) == {"a": {"b": 1, "c": 3}, "l": [9]}
    devices = [{"type": "jk", "address": "x", "options": {"variant": "v2"}}]
    cfg = parse_config(options_to_config(manifest()["options"], SERVICE_SAMPLE, extra={"devices": devices}))
    assert [d.id for d in cfg.devices] == ["x"] and cfg.devices[0].options == {"variant": "v2"}


def _config_leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path of the config (`devices[].type`); models inside Optional/list are walked into."""
    out: list[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        annotation: Any = field.annotation
        args = typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next((a for a in args if a is not type(None)), annotation)
        sub, many = annotation, False
        if typing.get_origin(annotation) is list and typing.get_args(annotation):
            sub, many = typing.get_args(annotation)[0], True
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _config_leaves(sub, f"{path}[]." if many else f"{path}.")
        else:
            out.append(path)
    return out


def test_every_config_field_is_offered_or_listed_as_not_offered() -> None:
    """The add-on follows the config: a new config field fails here until it is an option or in NOT_OFFERED."""
    leaves = _config_leaves(Config)
    # A list option offers its entries' keys, not the whole list (devices[].options is not offered).
    offered = {path for option, path in OPTION_PATHS.items() if path and option not in LISTS}
    offered |= {f"{path}[].{key}" for path, keys in LISTS.values() for key in keys}

    def covers(prefix: str, leaf: str) -> bool:
        return leaf == prefix or leaf.startswith(prefix + ".") or leaf.startswith(prefix + "[]")

    missing = [leaf for leaf in leaves if not any(covers(p, leaf) for p in offered | set(NOT_OFFERED))]
    assert not missing, f"config fields the add-on neither offers nor lists in NOT_OFFERED: {missing}"
    stale = [p for p in offered | set(NOT_OFFERED) if not any(covers(p, leaf) for leaf in leaves)]
    assert not stale, f"add-on paths that are not config fields: {stale}"
    assert set(manifest()["schema"]) == set(OPTION_PATHS)
    schema = manifest()["schema"]
    for option, (_, keys) in LISTS.items():
        assert set(schema[option][0]) == set(keys), option


def test_cli_writes_a_private_config(tmp_path: Path) -> None:
    (tmp_path / "options.json").write_text(json.dumps(manifest()["options"]))
    service = tmp_path / "mqtt.json"
    service.write_text(json.dumps(SERVICE_SAMPLE))
    out = tmp_path / "bmsbus.yaml"
    out.write_text("old")
    out.chmod(0o644)
    assert main(["--options", str(tmp_path / "options.json"), "--mqtt-service", str(service), "--out", str(out),
                 "--data-dir", str(tmp_path)]) == 0
    assert out.stat().st_mode & 0o077 == 0  # also when the file existed with a wider mode
    cfg = parse_config(yaml.safe_load(out.read_text()))
    assert cfg.mqtt.host == "core-mosquitto"  # type: ignore[union-attr]

    def cli(options: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "options.json").write_text(json.dumps(options))
        return subprocess.run([sys.executable, "-m", "bmsbus.ha_bridge.addon", "--options",
                               str(tmp_path / "options.json"), "--out", str(out), *args],
                              capture_output=True, text=True)

    # A bad option fails with the option named, before the stack starts.
    r = cli({**manifest()["options"], "site": "bad site"})
    assert r.returncode == 2 and "site" in r.stderr
    # No broker at all: the add-on refuses to start an embedded one HA could not reach.
    r = cli(manifest()["options"], "--require-mqtt")
    assert r.returncode == 2 and "no MQTT broker" in r.stderr
    # config_file: unreadable, not a mapping, or with a bad field -> named.
    r = cli({**manifest()["options"], "config_file": str(tmp_path / "nope.yaml")})
    assert r.returncode == 2 and "nope.yaml" in r.stderr
    (tmp_path / "list.yaml").write_text("- 1\n")
    r = cli({**manifest()["options"], "config_file": str(tmp_path / "list.yaml")})
    assert r.returncode == 2 and "mapping" in r.stderr
    (tmp_path / "bad.yaml").write_text("aggregator: {charge_control: {float_after: -1}}\n")
    r = cli({**manifest()["options"], "config_file": str(tmp_path / "bad.yaml")})
    assert r.returncode == 2 and "float_after" in r.stderr


@pytest.mark.broker
async def test_run_script_starts_the_stack_with_the_supervisors_broker(tmp_path: Path, mosquitto,
                                                                       watcher_factory) -> None:
    """run.sh as the Supervisor starts it, with bashio and the Supervisor API stubbed: the broker from
    /services/mqtt (asked with the token), options from options.json, `bmsbus stack` up -> HA discovery."""
    stubs, data, config = tmp_path / "bin", tmp_path / "data", tmp_path / "config"
    for d in (stubs, data, config):
        d.mkdir()
    service = {"result": "ok", "data": {"host": "127.0.0.1", "port": mosquitto.port, "ssl": False,
                                        "username": "", "password": ""}}
    (stubs / "curl").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/curl.args\necho '{json.dumps(service)}'\n")
    (stubs / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (stubs / "bmsbus").write_text(f"#!/bin/sh\nexec {Path(sys.executable).parent / 'bmsbus'} \"$@\"\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    bashio = tmp_path / "bashio.sh"  # the two bashio functions run.sh uses
    bashio.write_text('bashio::log.info() { echo "INFO $*" >&2; }\nbashio::log.warning() { echo "WARN $*" >&2; }\n')
    options = {**manifest()["options"], "site": "addon", "collector_id": "col",
               "devices": [{"alias": "sim1", "type": "simulated", "protocol": "jk_32s", "cells": 4}]}
    (data / "options.json").write_text(json.dumps(options))
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "BASH_ENV": str(bashio),
           "SUPERVISOR_TOKEN": "tok123", "BMSBUS_DATA_DIR": str(data), "BMSBUS_CONFIG_DIR": str(config)}
    async with watcher_factory("homeassistant/#") as w:
        proc = await asyncio.create_subprocess_exec("bash", str(ADDON / "run.sh"), env=env, cwd=tmp_path,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            await w.wait_for(lambda: w.on("homeassistant/device/bmsbus_addon_sim1/config"), timeout=60,
                             what="discovery from the add-on's stack")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
    discovery = json.loads(w.on("homeassistant/device/bmsbus_addon_sim1/config")[-1])
    assert "voltage" in discovery["components"]
    args = (tmp_path / "curl.args").read_text()
    assert "Authorization: Bearer tok123" in args and "http://supervisor/services/mqtt" in args
    written = yaml.safe_load((data / "bmsbus.yaml").read_text())
    assert written["mqtt"] == {"host": "127.0.0.1", "port": mosquitto.port}
    assert written["aggregator"]["state_dir"] == str(data / "state")
    assert (data / "bmsbus.yaml").stat().st_mode & 0o077 == 0
    assert b"starting bmsbus stack" in err
