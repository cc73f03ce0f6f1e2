"""JBD / Jiabaida / Xiaoxiang / Overkill (and JBD-protocol boards): protocols.md §6; docs/bms/jbd.md.

One entry serves both links: BLE (FF00/FF01/FF02) and UART/RS485 at 9600 8N1 speak the same frames."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry, SerialSpec
from . import codec
from .driver import JbdDriver
from .emulator import JbdEmulator

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="jbd", family="jbd", driver=JbdDriver,
        description="JBD / Xiaoxiang / Overkill smart BMS (Bluetooth or UART/RS485 9600 8N1)",
        ble=BleSpec(service="ff00", notify="ff01", write="ff02"),
        serial=SerialSpec(baudrate=9600),
        emulator=JbdEmulator,
        decode=codec.decode_chunks,
    ),
)

__all__ = ["PROTOCOLS", "JbdDriver", "JbdEmulator"]
