"""JK BMS family (Jikong): BLE JK02_24S / JK02_32S / JK04, the 0x4E57 UART, the JK-PB RS485 network.

Types a user can pick (`type:`): `jk` (BLE, layout from the firmware version), `jk_24s`, `jk_32s`, `jk04`
(BLE, layout forced), `jk_uart` (0x4E57 UART/RS485 of the older JK-B* BMS), `jk_pb` (one pack of a JK-PB RS485 network;
`driver.JkPbBus` yields samples of every pack on the bus). See docs/bms/jk.md.
"""

from __future__ import annotations

from functools import partial

from ...driver import BleSpec, ProtocolEntry, SerialSpec
from . import ble, driver, emulator, pb, uart
from .ble import Layout

BLE = BleSpec(service="ffe0", notify="ffe1", write="ffe1")

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="jk", family="jk",
        description="JK BMS over BLE, layout (JK02_24S / JK02_32S / JK04) detected from the firmware",
        driver=driver.JkBleDriver, emulator=partial(emulator.JkBleEmulator, layout=Layout.JK02_32S), ble=BLE,
        decode=ble.make_decode(None)),
    ProtocolEntry(
        name="jk_24s", family="jk", description="JK BMS over BLE, JK02_24S layout (firmware < 11)",
        driver=driver.Jk24sDriver, emulator=partial(emulator.JkBleEmulator, layout=Layout.JK02_24S), ble=BLE,
        decode=ble.make_decode(Layout.JK02_24S)),
    ProtocolEntry(
        name="jk_32s", family="jk", description="JK BMS over BLE, JK02_32S layout (firmware >= 11, JK-PB)",
        driver=driver.Jk32sDriver, emulator=partial(emulator.JkBleEmulator, layout=Layout.JK02_32S), ble=BLE,
        decode=ble.make_decode(Layout.JK02_32S)),
    ProtocolEntry(
        name="jk04", family="jk", description="JK BMS over BLE, JK04 layout (old hardware, float values)",
        driver=driver.Jk04Driver, emulator=partial(emulator.JkBleEmulator, layout=Layout.JK04), ble=BLE,
        decode=ble.make_decode(Layout.JK04)),
    ProtocolEntry(
        name="jk_uart", family="jk",
        description="JK-B* BMS on the UART/RS485 'GPS' port, 0x4E57 protocol (115200 8N1)",
        driver=driver.JkUartDriver, emulator=emulator.JkUartEmulator, serial=SerialSpec(115200),
        decode=uart.decode),
    ProtocolEntry(
        name="jk_pb", family="jk",
        description="JK-PB inverter BMS on its RS485-2 pack network (sniffs the address-0 master or polls itself); "
                    "option `address`",
        driver=driver.JkPbDriver, emulator=emulator.single_slave_bus, serial=SerialSpec(115200),
        decode=pb.decode),
)
