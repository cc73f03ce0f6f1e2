"""The "noname" Modbus RTU BMS over the Nordic UART service (batmon #131). Type (`type:`): `noname_modbus`.
See docs/bms/noname_modbus.md."""

from __future__ import annotations

from ...driver import BleSpec, ProtocolEntry
from . import codec, driver, emulator

NUS = BleSpec(service="6e400001-b5a3-f393-e0a9-e50e24dcca9e", notify="6e400003-b5a3-f393-e0a9-e50e24dcca9e",
              write="6e400002-b5a3-f393-e0a9-e50e24dcca9e")

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="noname_modbus", family="noname_modbus",
        description="no-name Modbus RTU BMS over BLE Nordic UART (batmon #131; low confidence)",
        driver=driver.NonameModbusDriver, emulator=emulator.NonameModbusEmulator, ble=NUS, decode=codec.decode),
)
