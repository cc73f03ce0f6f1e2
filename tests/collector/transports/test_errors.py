"""Every backend maps its library's exceptions into the LinkError tree, keeping the cause (style.md §4)."""

from __future__ import annotations

import asyncio

import pytest
import serial
from aioesphomeapi.core import (
    APIConnectionError,
    BluetoothConnectionDroppedError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    SocketClosedAPIError,
    TimeoutAPIError,
)
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from bmsbus.collector.links import ble, esphome
from bmsbus.collector.links import serial as serial_link
from bmsbus.collector.links.base import DeviceNotFound, LinkClosed, LinkError, LinkTimeout

CASES = [
    (ble.mapped, BleakDeviceNotFoundError("AA:BB:CC:DD:EE:FF"), DeviceNotFound, "not found"),
    (ble.mapped, BleakDBusError("org.bluez.Error.AuthenticationFailed", []), ble.PairingFailed, "wrong pin"),
    (ble.mapped, BleakGATTProtocolError(0x05), ble.PairingFailed, "set `pin:`"),
    (ble.mapped, BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []), LinkError, "BlueZ is not running"),
    (ble.mapped, BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]), LinkError, "abort"),
    (ble.mapped, BleakError("Not connected"), LinkClosed, "Not connected"),
    (ble.mapped, TimeoutError(), LinkTimeout, "timed out"),
    (ble.mapped, EOFError(), LinkClosed, "D-Bus connection lost"),
    (ble.mapped, FileNotFoundError(2, "No such file", "/run/dbus/system_bus_socket"), LinkError, "system D-Bus"),
    (esphome.mapped, TimeoutAPIError("slow"), LinkTimeout, "timed out"),
    (esphome.mapped, InvalidEncryptionKeyAPIError("bad key"), esphome.ProxyAuthError, "noise_psk"),
    (esphome.mapped, RequiresEncryptionAPIError("Connection requires encryption"), esphome.ProxyAuthError, "noise_psk"),
    (esphome.mapped, BluetoothConnectionDroppedError("gone"), LinkClosed, "gone"),
    (esphome.mapped, SocketClosedAPIError("closed"), LinkClosed, "closed"),
    (esphome.mapped, APIConnectionError("other"), LinkError, "other"),
    (serial_link.mapped, FileNotFoundError(2, "No such file"), DeviceNotFound, "plugged in"),
    (serial_link.mapped, PermissionError(13, "denied"), LinkError, "dialout"),
    (serial_link.mapped, serial.SerialException("Could not exclusively lock port /dev/ttyUSB0"), LinkError,
     "in use by another program"),
    (serial_link.mapped, ValueError("Invalid baud rate"), LinkError, "baud"),
]


@pytest.mark.parametrize(("mapper", "raised", "expected", "text"), CASES,
                         ids=[f"{m.__module__.rsplit('.', 1)[-1]}-{type(r).__name__}" for m, r, _, _ in CASES])
def test_library_errors_become_link_errors(mapper, raised: Exception, expected: type,  # noqa: ANN001
                                           text: str) -> None:
    with pytest.raises(expected, match=text) as info:
        with mapper("dev", "act"):
            raise raised
    assert info.value.__cause__ is raised


@pytest.mark.parametrize("mapper", [ble.mapped, esphome.mapped, serial_link.mapped])
def test_cancellation_passes_untouched(mapper) -> None:  # noqa: ANN001
    with pytest.raises(asyncio.CancelledError):
        with mapper("dev", "act"):
            raise asyncio.CancelledError
