"""Supervolt / E&J Technology family (AG Automotive, Chins/Meritsun single-frame units, libatt/Fliteboard).

Types (`type:`): `supervolt` (Nordic UART service, the units sold until 2023) and `supervolt_ff00` (the 2024
"blue top" units that advertise service FF00 with FF01 notify / FF02 write, batmon #226). See
docs/bms/supervolt.md.
"""

from __future__ import annotations

from functools import partial

from ...driver import BleSpec, ProtocolEntry
from . import codec, driver, emulator

NUS = BleSpec(service="6e400001-b5a3-f393-e0a9-e50e24dcca9e", notify="6e400003-b5a3-f393-e0a9-e50e24dcca9e",
              write="6e400002-b5a3-f393-e0a9-e50e24dcca9e")
FF00 = BleSpec(service="ff00", notify="ff01", write="ff02")
BLE_VARIANTS: tuple[BleSpec, ...] = (NUS, FF00)


class SupervoltFf00Driver(driver.SupervoltDriver):
    protocol = "supervolt_ff00"


PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="supervolt", family="supervolt",
        description="Supervolt / E&J Technology BMS over BLE (Nordic UART), ASCII protocol",
        driver=driver.SupervoltDriver, emulator=emulator.SupervoltEmulator, ble=NUS, decode=codec.decode),
    ProtocolEntry(
        name="supervolt_ff00", family="supervolt",
        description="Supervolt 2024 units over BLE (service FF00, FF01 notify / FF02 write), ASCII protocol",
        driver=SupervoltFf00Driver, emulator=partial(emulator.SupervoltEmulator, single_frame=True), ble=FF00,
        decode=codec.decode),
)
