"""Config loading: good configs load, bad ones give one line per problem naming file, field and what is allowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bmsbus.shared.batmon_import import convert, import_batmon
from bmsbus.shared.config import ConfigError, MqttConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
BMSBUS = [sys.executable, "-m", "bmsbus.shared.cli"]

BAD_CONFIGS = [
    # (yaml text, field the error must name, words it must contain)
    ("devices:\n  - type: jk\n    adress: C8:47:8C:00:00:01\n", "devices[0].adress", "unknown field"),
    ("devices:\n  - type: simulated\n    alias: a\n    chemistry: lead\n", "devices[0].chemistry",
     "'lfp', 'nmc' or 'lto'"),
    ("mqtt:\n  host: x\n  port: 99999\n", "mqtt.port", "less than or equal to 65535"),
    ("collector:\n  sample_period: -1\n", "collector.sample_period", "greater than 0"),
    ("site: my site\n", "site", "should match pattern"),
    ("devices:\n  - type: jk\n", "devices[0]", "needs an alias, an id or an address"),
    ("devices:\n  - {type: jk, alias: a}\n  - {type: jbd, alias: a}\n", "<top level>", "already used by devices[0]"),
    ("aggregator:\n  groups:\n    - {id: g, members: [nope]}\n", "<top level>", "unknown devices ['nope']"),
    ("devices: [\n", "YAML syntax error", "line"),
    ("topic_root: 'a/+/b'\n", "topic_root", "without wildcards"),
]


@pytest.mark.parametrize("text,field,words", BAD_CONFIGS, ids=[c[1] for c in BAD_CONFIGS])
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"{path}: {field}") and words in line for line in lines), lines


def test_cli_config_check_gives_one_line_per_problem_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("devices:\n  - type: not_a_bms\n    alias: x\n  - type: simulated\n    alias: y\n"
                    "    protocol: nope\n")
    proc = subprocess.run([*BMSBUS, "config", "check", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"{path}: devices[0].type: unknown BMS type 'not_a_bms'; allowed: ")
    assert "jk_32s" in lines[0] and "simulated" in lines[0]
    assert lines[1].startswith(f"{path}: devices[1].protocol: unknown BMS type 'nope'")


def test_demo_config_is_valid() -> None:
    proc = subprocess.run([*BMSBUS, "config", "check", str(REPO / "examples/demo.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ok (4 devices, 1 groups, broker embedded)" in proc.stdout


def test_device_id_defaults_to_slug_of_alias_and_batmon_fields_are_accepted() -> None:
    cfg = parse_config({"devices": [{"type": "jk", "address": "C8:47:8C:00:00:01", "alias": "Shed Battery 1",
                                     "pin": "123456", "adapter": "hci1", "debug": True,
                                     "current_calibration": 1.02, "algorithm": "soc 90% 80%"}]})
    dev = cfg.devices[0]
    assert dev.id == "shed_battery_1"
    assert dev.adapter == "hci1" and dev.current_calibration == 1.02 and dev.algorithm == "soc 90% 80%"
    assert "123456" not in repr(dev) and "123456" not in str(cfg.model_dump())


def test_mqtt_url_override_parses_credentials_and_never_shows_the_password() -> None:
    m = MqttConfig.from_url("mqtt://bms:s3cr%40t@broker.local:1884")
    assert (m.host, m.port, m.username) == ("broker.local", 1884, "bms")
    assert m.password is not None and m.password.get_secret_value() == "s3cr@t"
    assert "s3cr" not in m.display() and "s3cr" not in repr(m)
    assert MqttConfig.from_url("mqtts://h").port == 8883
    with pytest.raises(ValueError, match="expected mqtt://"):
        MqttConfig.from_url("http://h:1883")


BATMON_OPTIONS = {
    "mqtt_broker": "core-mosquitto:1884", "mqtt_user": "addons", "mqtt_password": "pw",
    "sample_period": 2.0, "publish_period": 5.0, "invert_current": True, "keep_alive": False,
    "concurrent_sampling": True,
    "influxdb_host": "influx.lan", "influxdb_username": "u", "influxdb_password": "p", "influxdb_database": "bms",
    "devices": [
        {"address": "C8:47:8C:00:00:01", "type": "jk", "alias": "jk1", "algorithm": "soc 90% 80%"},
        {"address": "AA:BB:CC:DD:EE:FF", "type": "daly", "alias": "daly1", "pin": "", "current_calibration": 1.1},
        {"address": "serial", "type": "jk_uart", "alias": "wired", "adapter": "/dev/ttyUSB0"},
        {"address": "#11:22:33:44:55:66", "type": "jbd", "alias": "off"},
        {"address": "jk1,daly1", "type": "group_parallel", "alias": "bank"},
    ],
}


def test_import_batmon_maps_devices_broker_periods_influx_and_groups(tmp_path: Path) -> None:
    cfg_dict, notes = convert(BATMON_OPTIONS)
    cfg = parse_config(cfg_dict)
    assert cfg.mqtt is not None and (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username) == ("core-mosquitto", 1884,
                                                                                          "addons")
    assert (cfg.collector.sample_period, cfg.collector.publish_period) == (2.0, 5.0)
    assert [d.id for d in cfg.devices] == ["jk1", "daly1", "wired"]
    assert cfg.devices[0].algorithm == "soc 90% 80%" and cfg.devices[0].keep_alive is False
    assert cfg.devices[1].current_calibration == 1.1 and cfg.devices[1].pin is None
    assert cfg.devices[2].address == "/dev/ttyUSB0" and cfg.devices[2].adapter is None
    assert [(g.id, g.members) for g in cfg.aggregator.groups] == [("bank", ["jk1", "daly1"])]
    assert cfg.influx.url == "http://influx.lan:8086" and cfg.influx.bucket == "bms/autogen"
    assert any("invert_current" in n for n in notes) and any("concurrent_sampling" in n for n in notes)
    assert any("disabled" in n for n in notes)

    src = tmp_path / "options.json"
    src.write_text(json.dumps(BATMON_OPTIONS))
    proc = subprocess.run([*BMSBUS, "config", "import-batmon", str(src)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "bmsbus.yaml"
    out.write_text(proc.stdout)
    assert load_config(out).devices[2].address == "/dev/ttyUSB0"
    assert yaml.safe_load(proc.stdout)["aggregator"]["groups"][0]["members"] == ["jk1", "daly1"]


def test_import_batmon_rejects_non_json(tmp_path: Path) -> None:
    src = tmp_path / "options.json"
    src.write_text("{nope")
    with pytest.raises(ConfigError, match=r"options.json: not JSON"):
        import_batmon(src)


def test_every_configured_secret_is_masked_in_log_records() -> None:
    import logging

    from bmsbus.shared.runner import SecretFilter, config_secrets

    cfg = parse_config({
        "mqtt": {"host": "b", "password": "mqtt-pw-1"}, "influx": {"url": "http://i", "token": "influx-tok-2"},
        "collector": {"esphome_proxies": [{"host": "p", "noise_psk": "cHNrLXNlY3JldC0z", "password": "proxy-pw-4"}]},
        "devices": [{"alias": "shunt", "type": "victron", "address": "AA:BB:CC:DD:EE:FF", "pin": "123456"}],
    })
    secrets = ["mqtt-pw-1", "influx-tok-2", "cHNrLXNlY3JldC0z", "proxy-pw-4", "123456"]
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "values: %s", (" ".join(secrets),), None)
    SecretFilter(config_secrets(cfg)).filter(record)
    text = record.getMessage()
    assert not any(s in text for s in secrets), text
    assert text == "values: " + " ".join(["***"] * len(secrets))
