"""End to end against a private Mosquitto: the aggregator as a user runs it, killed -9 and restarted
mid-trace; the meters continue exactly and duplicates delivered again change nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig
from bmsbus.shared.topics import Topics
from helpers import T0, close, sample, write_config
from support.procs import Mosquitto

pytestmark = pytest.mark.broker

BMSBUS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bmsbus"
N = 100


def p1(t: float) -> float:
    return 1000.0


def p2(t: float) -> float:
    return 500.0 - 10.0 * t  # crosses zero at t = 50 (a sample point)


def samples(lo: int, hi: int):
    for i in range(lo, hi):
        yield sample("p1", T0 + i, i, power=p1(i), current=p1(i) / 50, voltage=50.0, soc=50.0,
                     cell_voltages=[3.30, 3.35, 3.31])
        yield sample("p2", T0 + i, i, power=p2(i), current=p2(i) / 50, voltage=50.0)


def start(config: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BMSBUS), "aggregator", "--config", str(config), "--mqtt", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def test_kill9_and_restart_mid_trace_continues_meters_exactly(tmp_path: Path, mosquitto: Mosquitto,
                                                                    mqtt_config: MqttConfig,
                                                                    watcher_factory) -> None:
    config = write_config(tmp_path, devices=["p1", "p2"], groups=[{"id": "g", "members": ["p1", "p2"]}],
                          reorder_window=0.3, publish_interval=0.1, snapshot_interval=3600)
    topics = Topics("bmsbus/v1", "t")
    procs = []
    async with watcher_factory("bmsbus/v1/t/battery/#") as w, \
            Bus(mqtt_config, client_id="test-publisher") as pub:

        async def send(lo: int, hi: int) -> None:
            for s in samples(lo, hi):
                await pub.publish(topics.bms_sample(s.bms), s)

        def last(id: str) -> dict:
            states = w.json_on(f"/battery/{id}/state")
            return states[-1] if states else {}

        async def wait_ts(i: int) -> None:
            await w.wait_for(lambda: all(last(b).get("ts") == T0 + i for b in ("p1", "p2", "g")), 20,
                             f"all states at sample {i}")

        proc = start(config, mosquitto.url)
        procs.append(proc)
        try:
            # The first run creates the persistent session; until then samples would go nowhere.
            for attempt in range(200):
                await send(0, 1)
                await asyncio.sleep(0.05)
                if last("p1"):
                    break
            await send(1, 40)
            await wait_ts(39)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            # While it is down: the rest of the trace (queued by the broker for its session) and a replay of
            # samples it already counted.
            await send(40, 70)
            await send(30, 40)
            proc = start(config, mosquitto.url)
            procs.append(proc)
            await wait_ts(69)
            await send(70, N)
            await send(95, N)  # duplicates while it runs
            await wait_ts(N - 1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            outs = [p.communicate(timeout=15)[0].decode(errors="replace") for p in procs]

    n = N - 1  # intervals
    e1 = 1000.0 * n / 3.6e6
    p2_in, p2_out = 12500.0 / 3.6e6, 12005.0 / 3.6e6
    g_in = (1500.0 * n - 5.0 * n * n) / 3.6e6
    s1, s2, g = last("p1"), last("p2"), last("g")
    assert close(s1["energy_in_kwh"], e1) and s1["energy_out_kwh"] == 0.0, s1
    assert close(s1["charge_in_ah"], 20.0 * n / 3600), s1
    assert close(s2["energy_in_kwh"], p2_in) and close(s2["energy_out_kwh"], p2_out), s2
    assert close(s2["energy_net_kwh"], p2_in - p2_out), s2
    assert close(g["energy_in_kwh"], g_in) and g["energy_out_kwh"] == 0.0, g
    assert s1["cell_min"] == 3.30 and s1["cell_max"] == 3.35 and s1["cell_max_index"] == 1
    assert close(s1["cell_delta"], 0.05)
    # Published meters only ever grew, across the kill.
    for id in ("p1", "p2", "g"):
        ins = [s["energy_in_kwh"] for s in w.json_on(f"/battery/{id}/state")]
        assert ins == sorted(ins), id
    for out in outs:
        assert "Traceback" not in out, out[-3000:]
    assert "journal entries replayed" in outs[1]
    assert os.path.exists(tmp_path / "state" / "aggregator-state.json")
