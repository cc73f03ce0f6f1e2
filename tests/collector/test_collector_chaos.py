"""Chaos: eight simulated BMSes of different protocols misbehave at random for 60 s against one collector and
a private Mosquitto. Disconnects, silence, corrupt checksums, junk and truncated frames come and go per
device (emulation.base.Faults, shared by every link to the device so a fault outlives a reconnect).

Afterwards: the collector is still running, every device publishes again, every sample carries its own
device's signature (cell count, chemistry, capacity where the protocol reports it), and seq rises strictly
per device. About 100 s; in the default suite (`make test`), marked slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field

import pytest

from bmsbus.collector.emulation.base import Faults
from bmsbus.collector.service import Collector
from bmsbus.collector.simulated import configured_faults
from bmsbus.shared.config import parse_config

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(280)]

ROOT = "bmsbus/v1/chaos"
CHAOS_S = float(os.environ.get("BMSBUS_CHAOS_SECONDS", "60"))
RECOVERY_S = 60.0  # after the last fault ends, each device must publish again within this
CELL_RANGE = {"lfp": (2.7, 3.6), "nmc": (2.9, 4.3), "lto": (1.8, 2.8)}  # V per cell, with margin


@dataclass(frozen=True)
class Device:
    id: str
    protocol: str
    cells: int
    capacity: float
    chemistry: str


# Distinct cell counts: a sample under the wrong id cannot go unnoticed.
DEVICES = [
    Device("jk32", "jk_32s", 16, 280.0, "lfp"),
    Device("jk24", "jk_24s", 14, 100.0, "nmc"),
    Device("jbd", "jbd", 4, 50.0, "lfp"),
    Device("daly", "daly", 8, 120.0, "lfp"),
    Device("ant", "ant", 10, 150.0, "lto"),
    Device("sok", "sok", 5, 60.0, "lfp"),
    Device("litime", "litime", 6, 200.0, "nmc"),
    Device("pace", "pace_uart", 15, 230.0, "lfp"),
]


@dataclass
class Chaos:
    """One device's fault schedule: calm, an episode, calm, ... until `until`; every kind at least once."""

    device: Device
    faults: Faults
    rng: random.Random
    episodes: list[tuple[float, float, str]] = field(default_factory=list)

    def apply(self, kind: str) -> None:
        f, r = self.faults, self.rng
        if kind == "disconnect":
            f.disconnect = True
        elif kind == "silence":
            f.silence = True
        elif kind == "corrupt":
            f.corrupt_checksum = r.uniform(0.5, 1.0)
        elif kind == "junk":
            f.junk, f.truncate = r.uniform(0.3, 0.8), r.uniform(0.1, 0.3)

    def clear(self) -> None:
        f = self.faults  # the same object: the links hold it
        f.disconnect = f.silence = False
        f.corrupt_checksum = f.junk = f.truncate = 0.0

    async def run(self, until: float) -> None:
        durations = {"disconnect": (1, 6), "silence": (2, 10), "corrupt": (3, 8), "junk": (3, 8)}
        kinds = list(durations)
        self.rng.shuffle(kinds)
        try:
            while True:
                await asyncio.sleep(self.rng.uniform(2, 6))
                kind = kinds.pop() if kinds else self.rng.choice(list(durations))
                start = time.time()
                if start >= until:
                    return
                end = min(until, start + self.rng.uniform(*durations[kind]))
                self.apply(kind)
                await asyncio.sleep(max(0.0, end - time.time()))
                self.clear()
                self.episodes.append((start, time.time(), kind))
        finally:
            self.clear()


def make_collector(mqtt, faults: dict[str, Faults]) -> Collector:
    cfg = parse_config({
        "site": "chaos", "collector": {"id": "chaos", "sample_period": 0.5, "http": {"port": 0}},
        "devices": [{"alias": d.id, "type": "simulated", "protocol": d.protocol, "cells": d.cells,
                     "capacity_ah": d.capacity, "chemistry": d.chemistry, "options": {"faults": faults[d.id]}}
                    for d in DEVICES]})
    cfg.mqtt = mqtt
    return Collector(cfg)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_eight_devices_survive_chaos_and_recover(mqtt_config, watcher_factory, caplog) -> None:
    seed = int(os.environ.get("BMSBUS_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (BMSBUS_CHAOS_SEED={seed} repeats this schedule)")
    rng = random.Random(seed)
    faults = {d.id: Faults() for d in DEVICES}
    chaos = {d.id: Chaos(d, faults[d.id], random.Random(rng.random())) for d in DEVICES}
    collector = make_collector(mqtt_config, faults)
    caplog.set_level(logging.WARNING)

    async with watcher_factory(f"{ROOT}/bms/#") as w:
        task = asyncio.create_task(collector.run(), name="collector")
        try:
            await asyncio.wait_for(collector.health.http_ready.wait(), 10)
            port = collector.health.http_port
            assert port
            await w.wait_for(lambda: all(w.on(f"/bms/{d.id}/sample") for d in DEVICES), 30, "a first sample each")

            chaos_start = time.time()
            chaos_end = chaos_start + CHAOS_S
            runs = [asyncio.create_task(c.run(chaos_end)) for c in chaos.values()]
            statuses = []
            while time.time() < chaos_end:  # the endpoint keeps answering while devices churn
                status, body = await http_get(port, "/status")
                statuses.append(status)
                json.loads(body)
                assert (await http_get(port, "/metrics"))[0] == 200
                assert not task.done(), "the collector stopped during the chaos"
                await asyncio.sleep(1.0)
            await asyncio.gather(*runs)
            chaos_end = time.time()
            assert set(statuses) == {200}

            # Recovery: every device publishes samples taken after its last fault ended.
            def recovered(d: Device) -> bool:
                return sum(s["ts"] > chaos_end for s in w.json_on(f"/bms/{d.id}/sample")) >= 3

            try:
                await w.wait_for(lambda: all(recovered(d) for d in DEVICES), RECOVERY_S, "every device recovered")
            except AssertionError:
                doc = json.loads((await http_get(port, "/status"))[1])
                stuck = {d.id: {k: doc["devices"][d.id][k] for k in ("link_state", "consecutive_failures",
                                                                     "last_error", "last_sample_age_s")}
                         for d in DEVICES if not recovered(d)}
                raise AssertionError(f"not recovered {RECOVERY_S} s after the chaos (seed {seed}): {stuck}") from None
            assert not task.done()
            assert (await http_get(port, "/healthz")) == (200, b"ok\n")
            metrics = (await http_get(port, "/metrics"))[1].decode()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # The chaos happened: every device had every kind of episode, failures were seen, bad frames counted.
    for d in DEVICES:
        kinds = {k for _, _, k in chaos[d.id].episodes}
        assert kinds == {"disconnect", "silence", "corrupt", "junk"}, (d.id, chaos[d.id].episodes)
        links = w.json_on(f"/bms/{d.id}/link")
        assert any(lk["state"] in ("disconnected", "failed") for lk in links), (d.id, "never saw a failure")
        assert links[-1]["state"] == "connected"
    codec_errors = {d.id: collector.runners[d.id].codec_errors_seen for d in DEVICES}
    assert sum(n > 0 for n in codec_errors.values()) >= len(DEVICES) // 2, codec_errors
    assert 'bmsbus_device_codec_errors_total{bms="' in metrics

    # Between the faults the devices kept working.
    during = {d.id: sum(chaos_start < s["ts"] < chaos_end for s in w.json_on(f"/bms/{d.id}/sample")) for d in DEVICES}
    assert sum(during.values()) >= 5 * len(DEVICES), during

    # Every sample is its own device's, and seq rises strictly per device within the one boot.
    for d in DEVICES:
        samples = w.json_on(f"/bms/{d.id}/sample")
        assert {s["bms"] for s in samples} == {d.id}
        assert {s["boot"] for s in samples} == {collector.boot}
        seqs = [s["seq"] for s in samples]
        assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), (d.id, seqs)
        lo, hi = CELL_RANGE[d.chemistry]
        # A reading may come without cells (its cell frame lost); one that has them has all of them.
        assert sum("cell_voltages" in s for s in samples) >= len(samples) // 2, d.id
        for s in samples:
            cells = s.get("cell_voltages")
            if cells is not None:
                assert len(cells) == d.cells, (d.id, s)
                assert all(lo <= v <= hi for v in cells), (d.id, d.chemistry, cells)
            if "capacity" in s:
                assert s["capacity"] == pytest.approx(d.capacity), (d.id, s["capacity"])

    print({d.id: (len(w.on(f"/bms/{d.id}/sample")), during[d.id], codec_errors[d.id],
                  sorted(k for _, _, k in chaos[d.id].episodes)) for d in DEVICES})
    # Nothing crashed or logged an error with a traceback.
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad][:10]


def test_faults_from_a_config_file_keep_what_they_can_use(caplog) -> None:
    faults = configured_faults({"junk": 0.2, "silence": True, "junck": 0.5, "truncate": "lots",
                                "corrupt_checksum": 1.5, "disconnect": 1}, "dev")
    assert faults == Faults(junk=0.2, silence=True)
    assert [r.getMessage().split(" ")[0] for r in caplog.records] == ["dev:"] * 4
    assert "junck is not a fault" in caplog.text
    assert configured_faults([1, 2], "dev") is None
    shared = Faults(junk=0.1)
    assert configured_faults(shared) is shared
