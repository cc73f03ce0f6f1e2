"""ANT BMS, the "new" 7E A1 protocol over BLE (ANT-BLE24*, ANT-BLE3*): protocols.md §7; docs/bms/ant.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry
from . import codec
from .driver import AntDriver
from .emulator import AntEmulator

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="ant", family="ant", driver=AntDriver,
        description="ANT smart BMS, 7E A1 protocol over Bluetooth",
        ble=BleSpec(service="ffe0", notify="ffe1", write="ffe1"),
        emulator=AntEmulator,
        decode=codec.decode_chunks,
    ),
)

__all__ = ["PROTOCOLS", "AntDriver", "AntEmulator"]
