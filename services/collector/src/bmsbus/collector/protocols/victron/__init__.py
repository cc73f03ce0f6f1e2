"""Victron SmartShunt (BLE GATT characteristics, PIN pairing). Type (`type:`): `victron`.
See docs/bms/victron.md."""

from __future__ import annotations

from ...driver import ProtocolEntry
from ...links.gatt import GattCharsSpec
from . import codec, driver, emulator

# One service, one characteristic per value: `notify` names the first value characteristic, `write` the
# keep-alive (both checked at connect); GattCharsSpec: the link subscribes to nothing itself, the driver
# subscribes to every value (`VictronDriver.characteristics`) through CharLink and declares `requires_pairing`.
BLE = GattCharsSpec(service=codec.SERVICE, notify=codec.VOLTAGE.uuid, write=codec.KEEPALIVE.uuid)

PROTOCOLS: tuple[ProtocolEntry, ...] = (
    ProtocolEntry(
        name="victron", family="victron",
        description="Victron SmartShunt over BLE GATT (PIN pairing required; values per characteristic)",
        driver=driver.VictronDriver, emulator=emulator.VictronEmulator, ble=BLE, decode=codec.decode),
)
