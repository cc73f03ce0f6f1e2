"""SOK / ABC-BMS family (Chunguang Song; SOK, "NB-*", Hoover packs). Type (`type:`): `sok`.
See docs/bms/sok.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry
from . import codec, driver, emulator

BLE = BleSpec(service="ffe0", notify="ffe1", write="ffe2")

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="sok", family="sok", description="SOK / ABC-BMS over BLE (20-byte CC frames, CRC-8/MAXIM)",
        driver=driver.SokDriver, emulator=emulator.SokEmulator, ble=BLE, decode=codec.decode),
)
