"""Daly BMS: the 0xA5 protocol (old BLE modules `daly`, RS485/UART `daly_uart`) and the D2 Modbus protocol
over BLE (`daly2`, modules named DL-..., including the "p81" variant of ESS-DL-BMS modules, detected at
connect). protocols.md §4, §5; docs/bms/daly.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry, SerialSpec
from . import a5, d2
from .driver import DalyA5Driver, DalyBleDriver, DalyD2Driver
from .emulator import DalyA5Emulator, DalyD2Emulator, DalyP81Emulator

# Old A5 modules have no fixed GATT layout (protocols.md §4.3); FFF0/FFF1/FFF2 is the common one.
A5_BLE = BleSpec(service="fff0", notify="fff1", write="fff2")
D2_BLE = BleSpec(service="fff0", notify="fff1", write="fff2")

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="daly", family="daly", driver=DalyBleDriver, ble=A5_BLE,
        description="Daly 0xA5 protocol through an older Daly Bluetooth module",
        emulator=lambda state: DalyA5Emulator(state, transport="ble"),
        decode=a5.decode_chunks,
    ),
    ProtocolEntry(
        name="daly_uart", family="daly", driver=DalyA5Driver, serial=SerialSpec(baudrate=9600),
        description="Daly 0xA5 protocol on the UART/RS485 port (9600 8N1)",
        emulator=lambda state: DalyA5Emulator(state, transport="uart"),
        decode=a5.decode_chunks,
    ),
    ProtocolEntry(
        name="daly2", family="daly", driver=DalyD2Driver, ble=D2_BLE,
        description="Daly D2 Modbus protocol over Bluetooth (modules named DL-...; also the p81 variant)",
        emulator=DalyD2Emulator,
        decode=d2.decode_chunks,
    ),
)

__all__ = ["PROTOCOLS", "DalyA5Driver", "DalyBleDriver", "DalyD2Driver", "DalyA5Emulator", "DalyD2Emulator",
           "DalyP81Emulator"]
