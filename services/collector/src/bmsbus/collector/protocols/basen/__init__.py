"""Basen family: BLE (`type: basen`, service FA00) and RS485 (`type: basen_uart`, 9600 8N1).
See docs/bms/basen.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry, SerialSpec
from . import ble, driver, emulator, uart

BLE = BleSpec(service="fa00", notify="fa01", write="fa02")
SERIAL = SerialSpec(baudrate=9600)

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="basen", family="basen", description="Basen BMS over BLE (FA00; 3A/3B frames, sum16)",
        driver=driver.BasenBleDriver, emulator=emulator.BasenBleEmulator, ble=BLE, decode=ble.decode),
    ProtocolEntry(
        name="basen_uart", family="basen", description="Basen BMS over RS485 (7E .. 0D frames, 9600 baud)",
        driver=driver.BasenUartDriver, emulator=emulator.BasenUartEmulator, serial=SERIAL, decode=uart.decode),
)
