"""The Influx writer against a private Mosquitto and a real VictoriaMetrics (InfluxDB v2 write API)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from bmsbus.influx_writer.service import InfluxWriter, sample_lines, state_lines
from bmsbus.shared.bus import Bus
from bmsbus.shared.config import parse_config
from bmsbus.shared.models import BatteryState, Sample
from bmsbus.shared.quantities import STATE_QUANTITIES, Kind
from support.procs import VictoriaMetrics

pytestmark = pytest.mark.broker


@pytest.fixture
def victoria(tmp_path: Path):
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.workdir.mkdir()
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()


def test_lines_are_derived_from_the_catalog() -> None:
    s = Sample(bms="p1", ts=1700000000.5, boot="b", seq=1, voltage=53.2, current=-4.0, cycles=7,
               cell_voltages=[3.3, 3.31], temperatures=[20.5, 21.0], switches={"charge": True, "discharge": False},
               alarms=["cell_ovp"], balancing=[1])
    main, cells = sample_lines(s, "home")
    assert main.startswith("bms,bms=p1,site=home ")
    assert "voltage=53.2," in main and "current=-4.0" in main and "cycles=7.0" in main
    assert "temperatures_1=20.5" in main and "switch_charge=1i" in main and "switch_discharge=0i" in main
    assert "alarm_count=1i" in main and "balancing_count=1i" in main
    assert main.endswith(" 1700000000500")
    assert cells == "cells,bms=p1,site=home cell_voltages_001=3.3,cell_voltages_002=3.31 1700000000500"


def test_state_lines_carry_every_numeric_state_quantity() -> None:
    """Every numeric catalog quantity of BatteryState becomes a float field, including the sample keys the
    aggregator passes through (cycles, mos_temperature); text and list quantities are left out."""
    numeric = {q.key: 1.5 for q in STATE_QUANTITIES if q.unit is not None or q.kind is not Kind.STATE}
    st = BatteryState(id="g1", kind="group", ts=1700000000.0, voltage=53.0, cycles=12, mos_temperature=31.0,
                      cell_min_index=3, cell_max_index=0, cell_min_member="a1", stale_members=["a2"], **numeric)
    (line,) = state_lines(st, "home")
    head, fields, ts = line.split(" ")
    assert head == "battery,battery=g1,kind=group,site=home" and ts == "1700000000000"
    got = dict(f.split("=") for f in fields.split(","))
    for key in numeric:
        assert got.pop(key) == "1.5", key
    assert got == {"voltage": "53.0", "cell_min_index": "3.0", "cell_max_index": "0.0", "mos_temperature": "31.0",
                   "cycles": "12.0", "stale": "0i"}
    assert {"cycles_soc", "cycles_throughput", "time_to_empty", "time_to_full"} <= set(numeric)


async def test_samples_reach_victoriametrics_and_bad_messages_are_skipped(mqtt_config, victoria) -> None:
    cfg = parse_config({"site": "t", "influx": {"url": victoria.url, "token": "x", "flush_interval": 0.2}})
    cfg.mqtt = mqtt_config
    writer = InfluxWriter(cfg)
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(1.0)  # subscribed
        t0 = time.time() - 60
        async with Bus(mqtt_config, client_id="test-pub") as bus:
            await bus.publish("bmsbus/v1/t/bms/p1/sample", b"{garbage")
            await bus.publish("bmsbus/v1/t/bms/p1/sample", b'{"bms":"p1","ts":1,"boot":"b","seq":-5}')
            for i in range(5):
                s = Sample(bms="p1", ts=t0 + i, boot="b", seq=i, voltage=50.0 + i, soc=40.0 + i,
                           cell_voltages=[3.1 + i / 100, 3.2])
                await bus.publish("bmsbus/v1/t/bms/p1/sample", s)
        deadline = time.monotonic() + 15
        while True:
            series = {tuple(sorted(x["metric"].items())): x for x in victoria.export('{__name__=~"bms_.*|cells_.*"}')}
            volt = [x for k, x in series.items() if ("__name__", "bms_voltage") in k]
            if volt and len(volt[0]["values"]) == 5:
                break
            assert time.monotonic() < deadline, f"VictoriaMetrics has {series}"
            await asyncio.sleep(0.5)
        assert volt[0]["values"] == [50.0, 51.0, 52.0, 53.0, 54.0]
        assert volt[0]["metric"] == {"__name__": "bms_voltage", "bms": "p1", "site": "t"}
        assert volt[0]["timestamps"][0] == int(t0 * 1000)
        cell1 = [x for k, x in series.items() if ("__name__", "cells_cell_voltages_001") in k][0]
        assert cell1["values"] == [3.1, 3.11, 3.12, 3.13, 3.14]
        assert writer.inbox.bad["sample"] == 2 and writer.sink.written >= 10
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_database_outage_keeps_lines_and_retries(mqtt_config, tmp_path) -> None:
    """Nothing listens at first: lines stay queued; when the database appears they are written."""
    vm = VictoriaMetrics(tmp_path / "vm2")
    vm.workdir.mkdir()
    from support.procs import free_port

    vm.port = free_port()
    cfg = parse_config({"site": "t", "influx": {"url": vm.url, "token": "x", "flush_interval": 0.2}})
    cfg.mqtt = mqtt_config
    writer = InfluxWriter(cfg)
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(1.0)
        async with Bus(mqtt_config, client_id="test-pub2") as bus:
            await bus.publish("bmsbus/v1/t/bms/p9/sample",
                              Sample(bms="p9", ts=time.time() - 5, boot="b", seq=0, voltage=12.5))
        await asyncio.sleep(1.5)
        assert len(writer.sink.queue) == 1 and writer.sink.written == 0
        vm.start()
        deadline = time.monotonic() + 30
        while writer.sink.written == 0:
            assert time.monotonic() < deadline, "queued line never written"
            await asyncio.sleep(0.2)
        assert [x["values"] for x in vm.export('{__name__="bms_voltage"}')] == [[12.5]]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        vm.stop()
