"""End to end on a private Mosquitto: runtime settings and meter resets as a person (or the HA bridge) sends
them. The retained settings and the control limits follow a change, an invalid request is rejected with its
reason, a repeated id is applied once, a reset zeroes the published meters which then grow from 0, and all
of it survives a restart of the aggregator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig
from bmsbus.shared.models import MetersReset, Sample, SettingsRequest
from bmsbus.shared.topics import Topics

from helpers import make_aggregator as make

pytestmark = pytest.mark.broker

ROOT = "bmsbus/v1/t"
TOPICS = Topics("bmsbus/v1", "t")


class Collector:
    """A fake collector: 20 samples a second for a and b while `flowing` is set (1 kW into each pack)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seq = 0
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def run(self) -> None:
        while True:
            await self.flowing.wait()
            self.seq += 1
            for bms in ("a", "b"):
                await self.bus.publish(TOPICS.bms_sample(bms), Sample(
                    bms=bms, ts=time.time(), boot="e2e", seq=self.seq, voltage=52.8, current=1000 / 52.8, power=1000.0,
                    soc=60.0, capacity=100.0, cell_voltages=[3.3] * 16, temperatures=[20.0]))
            await asyncio.sleep(0.05)


def request(id: str, **settings: float | str | None) -> SettingsRequest:
    return SettingsRequest(id=id, settings=settings, issued=time.time(), expires=time.time() + 30, origin="e2e test")


async def test_settings_and_meter_resets_over_mqtt(tmp_path: Path, mqtt_config: MqttConfig, watcher_factory) -> None:
    async with watcher_factory(f"{ROOT}/battery/#") as w, Bus(mqtt_config, client_id="test-e2e-settings") as bus:
        collector = Collector(bus)
        sampling = asyncio.create_task(collector.run())
        agg = make(tmp_path, mqtt_config)
        task = asyncio.create_task(agg.run())

        def last(suffix: str) -> dict:
            got = w.json_on(suffix)
            return got[-1] if got else {}

        def result(id: str) -> dict:
            return next((r for r in w.json_on("/battery/a/cmd/result") if r["id"] == id), {})

        async def send(topic: str, model) -> None:
            await bus.publish(topic, model)

        try:
            await w.wait_for(lambda: last("/battery/a/state").get("energy_in_kwh", 0) > 0, 20, "meters running")
            await w.wait_for(lambda: last("/battery/a/settings").get("values", {}).get("max_charge_current") == 50.0,
                             10, "retained settings from the config")
            assert last("/battery/a/settings")["overridden"] == []
            await w.wait_for(lambda: last("/battery/a/control").get("charge_current", {}).get("value") == 50.0, 10,
                             "control at the configured maximum")

            # A change: the answer, the retained settings and the limits follow.
            await send(TOPICS.battery_settings_set("a"), request("s1", max_charge_current=20))
            await w.wait_for(lambda: result("s1"), 10, "answer to s1")
            assert result("s1") == {"schema_version": 1, "id": "s1", "bms": "a", "status": "ok",
                                    "ts": result("s1")["ts"]}
            await w.wait_for(lambda: last("/battery/a/settings").get("overridden") == ["max_charge_current"], 10,
                             "settings re-published")
            assert last("/battery/a/settings")["values"]["max_charge_current"] == 20.0
            await w.wait_for(lambda: last("/battery/a/control").get("charge_current", {}).get("value") == 20.0, 10,
                             "CCL follows")
            assert last("/battery/a/control")["charge_current"]["reason"] == "configured maximum (set at run time)"
            await w.wait_for(lambda: last("/battery/g/settings").get("values", {}).get("max_charge_current") == 70.0,
                             10, "the group shows what its members now allow")

            # Invalid: rejected with the reason, nothing changes (all or nothing).
            await send(TOPICS.battery_settings_set("a"),
                       request("bad", max_discharge_current=10, max_charge_current=5000))
            await w.wait_for(lambda: result("bad"), 10, "answer to bad")
            assert result("bad")["status"] == "rejected"
            assert result("bad")["reason"] == "max_charge_current: 5000.0 is outside 0..2000 A"
            # A repeated id: applied once. s2 sets 15 A, s3 returns to the config, s2 again must not set 15 A.
            await send(TOPICS.battery_settings_set("a"), request("s2", max_charge_current=15))
            await w.wait_for(lambda: result("s2"), 10, "answer to s2")
            await send(TOPICS.battery_settings_set("a"), request("s3", max_charge_current=None))
            await w.wait_for(lambda: result("s3"), 10, "answer to s3")
            again = request("s2", max_charge_current=15)
            await send(TOPICS.battery_settings_set("a"), again)
            await w.wait_for(lambda: len([r for r in w.json_on("/battery/a/cmd/result") if r["id"] == "s2"]) == 2, 10,
                             "second answer to s2")
            answers = [r for r in w.json_on("/battery/a/cmd/result") if r["id"] == "s2"]
            assert [(r["status"], r.get("reason")) for r in answers] == [
                ("ok", None), ("rejected", "duplicate request id (already applied)")]
            await w.wait_for(lambda: last("/battery/a/settings").get("overridden") == [], 10, "back to the config")
            await asyncio.sleep(0.5)
            assert last("/battery/a/settings")["values"]["max_charge_current"] == 50.0
            assert last("/battery/a/settings")["values"]["max_discharge_current"] == 60.0
            assert last("/battery/a/control")["charge_current"]["value"] == 50.0

            # The settings are retained: a newcomer gets them at once.
            async with watcher_factory(TOPICS.battery_settings("a")) as newcomer:
                await newcomer.wait_for(lambda: newcomer.messages, 10, "retained settings")
                assert newcomer.messages[0][2] is True

            # Meters reset: with the samples stopped the published meters go to 0 ...
            collector.flowing.clear()
            paused = time.time()
            await asyncio.sleep(0.6)  # the last samples leave the reorder window and are integrated
            assert last("/battery/a/state")["energy_in_kwh"] > 0
            await send(TOPICS.battery_meters_reset("a"), MetersReset(id="m1", issued=time.time(),
                                                                     expires=time.time() + 30))
            await w.wait_for(lambda: result("m1"), 10, "answer to m1")
            assert result("m1")["status"] == "ok"
            await w.wait_for(lambda: last("/battery/a/state").get("energy_in_kwh") == 0.0, 10, "meters at 0")
            zeroed = last("/battery/a/state")
            assert all(zeroed[k] == 0.0 for k in ("energy_out_kwh", "energy_net_kwh", "charge_in_ah", "charge_out_ah",
                                                  "charge_net_ah", "cycles_soc"))
            assert last("/battery/b/state")["energy_in_kwh"] > 0  # only a was reset
            # ... and grow again from 0 when samples flow.
            collector.flowing.set()
            await w.wait_for(lambda: last("/battery/a/state").get("energy_in_kwh", 0) > 0, 10, "meters grow again")
            await asyncio.sleep(0.5)
            collector.flowing.clear()
            await asyncio.sleep(0.6)
            grown = last("/battery/a/state")["energy_in_kwh"]
            # At most 1 kW since the last sample before the reset (the interval from it to the first one after
            # counts after the reset); what was counted before it is gone.
            assert 0 < grown <= 1000 * (time.time() - paused + 0.1) / 3.6e6

            # A setting to carry over a restart.
            await send(TOPICS.battery_settings_set("a"), request("s4", max_charge_current=25, charge_control="float"))
            await w.wait_for(lambda: result("s4"), 10, "answer to s4")
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        # A restart: settings and reset meters come back from the state dir, not the old totals.
        w.messages.clear()
        agg = make(tmp_path, mqtt_config)
        task = asyncio.create_task(agg.run())
        try:
            await w.wait_for(lambda: last("/battery/a/settings").get("overridden"), 20, "settings after the restart")
            assert last("/battery/a/settings")["overridden"] == ["charge_control", "max_charge_current"]
            assert last("/battery/a/settings")["values"]["charge_control"] == "float"
            await w.wait_for(lambda: last("/battery/a/state"), 10, "state after the restart")
            assert 0 < last("/battery/a/state")["energy_in_kwh"] <= grown + 1e-12
            collector.flowing.set()
            await w.wait_for(lambda: last("/battery/a/control").get("mode", "").startswith("Float"), 10,
                             "float held after the restart")
            assert last("/battery/a/control")["charge_current"]["value"] <= 25.0
            # The duplicate is still a duplicate after the restart.
            await send(TOPICS.battery_settings_set("a"), again)
            await w.wait_for(lambda: result("s2"), 10, "answer to s2 after the restart")
            assert result("s2")["reason"] == "duplicate request id (already applied)"
        finally:
            sampling.cancel()
            task.cancel()
            for t in (sampling, task):
                try:
                    await t
                except asyncio.CancelledError:
                    pass
    assert agg.errors == 0 and sum(agg.inbox.bad.values()) == 0
