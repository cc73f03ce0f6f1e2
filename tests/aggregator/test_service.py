"""The service on a private Mosquitto, in process: states, control, group commands, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig
from bmsbus.shared.models import Command, CommandResult
from bmsbus.shared.topics import Topics

from helpers import make_aggregator as make

pytestmark = pytest.mark.broker

ROOT = "bmsbus/v1/t"


async def test_states_control_group_commands_and_bad_input(tmp_path: Path, mqtt_config: MqttConfig,
                                                           watcher_factory) -> None:
    agg = make(tmp_path, mqtt_config)
    topics = Topics("bmsbus/v1", "t")
    async with watcher_factory(f"{ROOT}/#") as w, Bus(mqtt_config, client_id="test-fake-collector") as col:
        task = asyncio.create_task(agg.run())
        try:
            # A fake collector: answers commands for a (ok) and b (failed).
            await col.subscribe(topics.all_of("cmd"))

            async def answer() -> None:
                async for m in col.messages():
                    cmd = Command.from_json(m.payload)
                    bms = m.topic.split("/")[-2]
                    status = "ok" if bms == "a" else "failed"
                    await col.publish(topics.bms_cmd_result(bms), CommandResult(
                        id=cmd.id, bms=bms, status=status, ts=time.time(),
                        reason=None if status == "ok" else "device not connected"))

            answering = asyncio.create_task(answer())
            now = time.time()
            for i in range(200):  # until the aggregator's session exists
                if w.json_on("/battery/a/state"):
                    break
                await col.publish(topics.bms_sample("a"), json.dumps({
                    "bms": "a", "ts": now + i * 0.01, "boot": "x", "seq": i, "voltage": 53.0, "current": 5.0,
                    "cell_voltages": [3.3, 3.31], "temperatures": [-3.0]}))
                await asyncio.sleep(0.05)
            # Garbage is counted, never fatal.
            await col.publish(f"{ROOT}/bms/a/sample", b"{not json")
            await col.publish(f"{ROOT}/bms/a/sample", json.dumps({"bms": "b", "ts": 1, "boot": "x", "seq": 1}))
            await col.publish(f"{ROOT}/bms/a/sample", json.dumps({"bms": "a", "ts": "soon", "boot": "x", "seq": 1}))
            await w.wait_for(lambda: sum(agg.inbox.bad.values()) >= 3, 10, "bad messages counted")

            await w.wait_for(lambda: w.json_on("/battery/a/control"), 10, "control")
            control = w.json_on("/battery/a/control")[-1]
            assert control["charge_current"] == {"value": 0.0, "reason": "temperature: lowest -3.0 °C"}
            assert control["allow_charge"] is False and control["mode"].startswith("Bulk")
            await w.wait_for(lambda: w.json_on("/battery/g/control"), 10, "group control")
            assert w.json_on("/battery/g/control")[-1]["charge_current"]["reason"].startswith("a: temperature")

            cmd = Command(id="ha-1", switch="charge", value=False, issued=time.time(), expires=time.time() + 30)
            await col.publish(topics.battery_cmd("g"), cmd)
            await w.wait_for(lambda: len(w.json_on("/battery/g/cmd/result")) >= 3, 10, "group results")
            results = w.json_on("/battery/g/cmd/result")
            by = {r["bms"]: r for r in results}
            assert by["a"]["status"] == "ok" and by["b"]["status"] == "failed"
            assert by["g"]["status"] == "failed" and by["g"]["reason"] == "b: failed (device not connected)"
            assert {r["id"] for r in results} == {"ha-1"}
            sent = [json.loads(p) for t, p, _ in w.messages if t.endswith("/cmd") and "/bms/" in t]
            assert sorted(t.split("/")[-2] for t, _, _ in w.messages if t.endswith("/cmd") and "/bms/" in t) == \
                ["a", "b"]
            assert all(c["expires"] == cmd.expires and c["switch"] == "charge" for c in sent)
            # The same id again is refused, not executed twice.
            await col.publish(topics.battery_cmd("g"), cmd)
            await w.wait_for(lambda: any(r.get("reason") == "duplicate command id"
                                         for r in w.json_on("/battery/g/cmd/result")), 10, "duplicate refused")
            answering.cancel()
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    state = w.json_on("/battery/a/state")[-1]
    assert state["cell_max_index"] == 1 and state["kind"] == "pack"
    assert (tmp_path / "state" / "aggregator-state.json").exists()
    assert agg.errors == 0
