"""LiTime / Redodo family (Power Queen, Starry Sea). Type (`type:`): `litime`. See docs/bms/litime.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry
from . import codec, driver, emulator

BLE = BleSpec(service="ffe0", notify="ffe1", write="ffe2")

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="litime", family="litime", description="LiTime / Redodo / Power Queen battery over BLE",
        driver=driver.LiTimeDriver, emulator=emulator.LiTimeEmulator, ble=BLE, decode=codec.decode),
)
