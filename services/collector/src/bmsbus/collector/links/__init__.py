"""Links carry bytes between the collector and one BMS: BLE (bleak), ESPHome proxy, serial, or an emulator."""

from .base import DeviceNotFound, Link, LinkClosed, LinkError, LinkTimeout, QueueLink

__all__ = ["DeviceNotFound", "Link", "LinkClosed", "LinkError", "LinkTimeout", "QueueLink"]
