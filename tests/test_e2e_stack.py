"""End to end: `bmsbus stack` with simulated packs against a private Mosquitto, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.procs import Mosquitto

pytestmark = pytest.mark.broker

PACKS = ["lfp_a", "lfp_b", "nmc_c"]


def write_config(tmp_path: Path) -> Path:
    cfg = {
        "site": "e2e",
        "collector": {"id": "e2e-col", "sample_period": 0.5},
        "devices": [
            {"alias": "lfp_a", "type": "simulated", "protocol": "jk_32s", "chemistry": "lfp", "cells": 16,
             "capacity_ah": 280, "options": {"period_s": 20}},
            {"alias": "lfp_b", "type": "simulated", "protocol": "jk_32s", "chemistry": "lfp", "cells": 8,
             "capacity_ah": 100, "options": {"period_s": 20}},
            {"alias": "nmc_c", "type": "simulated", "protocol": "jk_24s", "chemistry": "nmc", "cells": 14,
             "capacity_ah": 50, "options": {"period_s": 20}},
        ],
        "aggregator": {"state_dir": str(tmp_path / "state"), "groups": [
            {"id": "bank", "members": ["lfp_a", "lfp_b"], "topology": "parallel"}]},
    }
    path = tmp_path / "bmsbus.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_stack_end_to_end(tmp_path: Path, mosquitto: Mosquitto, watcher_factory) -> None:
    config = write_config(tmp_path)
    async with watcher_factory("bmsbus/v1/e2e/#", "homeassistant/#") as w:
        proc = subprocess.Popen([sys.executable, "-m", "bmsbus.shared.cli", "stack", "--config", str(config),
                                 "--mqtt", mosquitto.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            root = "bmsbus/v1/e2e"
            await w.wait_for(lambda: w.on(f"{root}/collector/e2e-col/status")[-1:] == [b"online"], 30,
                             "collector online")
            # Samples for every pack, seq strictly increasing per pack.
            await w.wait_for(lambda: all(len(w.on(f"/bms/{p}/sample")) >= 6 for p in PACKS), 40, "6 samples each")
            for p in PACKS:
                samples = w.json_on(f"/bms/{p}/sample")
                seqs = [s["seq"] for s in samples]
                assert seqs == sorted(set(seqs)), seqs
                assert all(s["bms"] == p for s in samples)
                assert len(samples[-1]["cell_voltages"]) == {"lfp_a": 16, "lfp_b": 8, "nmc_c": 14}[p]
                assert 2.5 < min(samples[-1]["cell_voltages"]) < 4.3
            # Retained discovery for every pack.
            await w.wait_for(lambda: all(any(t.startswith("homeassistant/device/") and p in t and pl
                                             for t, pl, _ in w.messages) for p in PACKS), 30, "HA discovery")
            # Energy meters grow: the simulated packs charge and discharge, so in + out rises.
            def throughput(battery: str) -> float:
                states = w.json_on(f"/battery/{battery}/state")
                return states[-1]["energy_in_kwh"] + states[-1]["energy_out_kwh"] if states else 0.0

            await w.wait_for(lambda: all(w.json_on(f"/battery/{b}/state") for b in [*PACKS, "bank"]), 30,
                             "battery states")
            first = {b: throughput(b) for b in PACKS}
            await w.wait_for(lambda: all(throughput(b) > first[b] for b in PACKS), 30, "meters growing")
            assert throughput("bank") > 0
        finally:
            proc.send_signal(signal.SIGKILL)
            out = proc.communicate(timeout=10)[0].decode(errors="replace")
        # Killed without a goodbye: the broker publishes the collector's last will.
        await w.wait_for(lambda: w.on("/collector/e2e-col/status")[-1:] == [b"offline"], 20, "last will")
        assert "Traceback" not in out, out[-3000:]


async def test_stack_stops_cleanly_on_sigterm(tmp_path: Path, mosquitto: Mosquitto, watcher_factory) -> None:
    config = write_config(tmp_path)
    async with watcher_factory("bmsbus/v1/e2e/collector/#") as w:
        proc = subprocess.Popen([sys.executable, "-m", "bmsbus.shared.cli", "stack", "--config", str(config),
                                 "--mqtt", mosquitto.url, "--only", "collector"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        await w.wait_for(lambda: w.on("/status")[-1:] == [b"online"], 30, "online")
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0].decode(errors="replace")
        assert proc.returncode == 0, out[-3000:]
        await w.wait_for(lambda: w.on("/status")[-1:] == [b"offline"], 10, "clean offline")
        assert "Traceback" not in out
        birth = json.loads(w.on("/birth")[-1])
        assert [d["bms"] for d in birth["devices"]] == PACKS
