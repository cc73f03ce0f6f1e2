"""Chooses and opens the real transport for a configured device (BLE, ESPHome proxy or serial)."""

from __future__ import annotations

from bmsbus.shared.config import DeviceConfig

from ..driver import ProtocolEntry
from .base import Link, LinkError


def open_link(dev: DeviceConfig, entry: ProtocolEntry) -> Link:
    raise LinkError(f"no transport for {entry.name} at {dev.address!r} yet")
