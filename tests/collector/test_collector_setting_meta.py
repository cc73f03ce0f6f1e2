"""A BMS's writable settings in its meta: declared once by the driver (`setting_specs()`), carried on the bus as
`Meta.setting_specs` (range, step, unit) next to the old `settings` names, with the current values read from the
BMS in `Meta.setting_values`, re-published when a write or a periodic read changes them."""

from __future__ import annotations

import asyncio
import time

import pytest

from bmsbus.collector.protocols.jk import ble
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.jk.driver import Jk04Driver, Jk24sDriver, Jk32sDriver, JkBleDriver
from bmsbus.collector.service import Collector, current_setting_values
from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig, parse_config
from bmsbus.shared.models import Command, Meta
from support.services import running

ROOT = "bmsbus/v1/t"


def driver_emulator(driver: type[JkBleDriver]):  # noqa: ANN201 - an Emulator
    emulator = REGISTRY[driver.protocol].emulator
    assert emulator is not None
    return emulator(make_pack(cells=16))


@pytest.mark.parametrize("driver", [Jk24sDriver, Jk32sDriver, Jk04Driver], ids=lambda d: d.protocol)
def test_jk_declarations_are_the_bus_spec(driver: type[JkBleDriver]) -> None:
    """The JK driver declares its settings as the bus carries them: the register table's ranges, and the
    step the BMS stores (mV)."""
    drv = driver(EmulatedLink(driver_emulator(driver)))
    declared = ble.settings_for(drv.layout)
    assert drv.writable_settings() == tuple(s.name for s in declared)
    for bus, spec in zip(drv.setting_specs(), declared, strict=True):
        assert (bus.name, bus.unit, bus.min, bus.max, bus.description) == (
            spec.name, spec.unit, spec.minimum, spec.maximum, spec.description)
        assert bus.step == pytest.approx(1 / spec.factor) == pytest.approx(0.001)


class _Driver:
    """What the publisher asks of a driver: names it may write and the values it last read (maybe junk)."""

    def __init__(self, values: object) -> None:
        self.values = values

    def writable_settings(self) -> tuple[str, ...]:
        return ("cell_ovp", "cell_uvp")

    def setting_values(self) -> object:
        return self.values


def test_current_values_are_the_declared_ones_only() -> None:
    driver = _Driver({"cell_ovp": 3.65, "cell_ovpr": 3.5, "cell_uvp": float("nan")})
    assert current_setting_values(driver) == {"cell_ovp": 3.65}  # type: ignore[arg-type]
    assert current_setting_values(_Driver(None)) == {}  # type: ignore[arg-type]


@pytest.mark.broker
async def test_meta_carries_specs_and_values_and_follows_a_write(mqtt_config: MqttConfig, watcher_factory) -> None:
    cfg = parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 0.3},
                        "devices": [{"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 4}]})
    cfg.mqtt = mqtt_config
    async with watcher_factory(f"{ROOT}/bms/#") as w, running(Collector(cfg)):
        await w.wait_for(lambda: w.json_on("/bms/p1/meta"), 20, "meta")
        meta = Meta.model_validate(w.json_on("/bms/p1/meta")[-1])
        assert meta.settings == [s.name for s in meta.setting_specs] == [s.name for s in ble.SETTINGS]
        ovp = next(s for s in meta.setting_specs if s.name == "cell_ovp")
        assert (ovp.unit, ovp.min, ovp.max, ovp.step) == ("V", 1.2, 4.5, 0.001)
        assert meta.setting_values == {"cell_ovp": 3.65, "cell_uvp": 2.6, "balance_trigger_delta": 0.005,
                                       "balance_start_voltage": 3.4}
        metas = len(w.on("/bms/p1/meta"))
        await asyncio.sleep(1.0)
        assert len(w.on("/bms/p1/meta")) == metas  # unchanged values: no re-publish per sample

        now = time.time()
        async with Bus(mqtt_config, client_id="test-sender") as bus:
            await bus.publish(f"{ROOT}/bms/p1/cmd", Command(id="s-1", action="set_setting", setting="cell_ovp",
                                                            number=3.6, issued=now, expires=now + 30))
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), 20, "result")
        assert w.json_on("/bms/p1/cmd/result")[-1]["status"] == "ok"
        topics = [t for t, _, _ in w.messages]
        last_meta = max(i for i, t in enumerate(topics) if t.endswith("/bms/p1/meta"))
        assert last_meta < topics.index(f"{ROOT}/bms/p1/cmd/result"), "the new value is on the bus before the ok"
        assert w.json_on("/bms/p1/meta")[-1]["setting_values"]["cell_ovp"] == 3.6
        assert len(w.on("/bms/p1/meta")) == metas + 1
