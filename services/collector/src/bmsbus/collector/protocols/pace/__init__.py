"""PACE "paceic" ASCII protocol over RS232/RS485. Type (`type:`): `pace_uart`. See docs/bms/pace.md."""

from __future__ import annotations

from ...driver import ProtocolEntry, SerialSpec
from . import codec, driver, emulator

SERIAL = SerialSpec(baudrate=9600)

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="pace_uart", family="pace",
        description="PACE BMS over RS232/RS485, ASCII protocol version 0x25 (CR-terminated frames)",
        driver=driver.PaceDriver, emulator=emulator.PaceEmulator, serial=SERIAL, decode=codec.decode),
)
