"""The `simulated` device type: an emulated BMS, moved by a PackSimulator, reached through EmulatedLink.

Samples still go through the protocol's real driver and codec: the emulator produces byte-exact frames
and the collector decodes them exactly as it would decode a real device's.

Faults (emulation.base.Faults) come from `options.faults`: a mapping in the config file (e.g.
`{junk: 0.05, corrupt_checksum: 0.02}`: a noisy device for a demo), or a Faults object put there by a
test, which is then shared by every link to the device so a fault outlives a reconnect, as it would on
real hardware.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from typing import Any

from bmsbus.shared.config import DeviceConfig

from .driver import ProtocolEntry
from .emulation.base import Emulator, Faults, PackSimulator, PackState, make_pack
from .links.emulated import EmulatedLink

log = logging.getLogger("bmsbus.collector.simulated")

DEFAULT_PROTOCOL = "jk_32s"
DEFAULT_CELLS = {"lfp": 16, "nmc": 14, "lto": 20}


class SimulatedEmulator:
    """An emulator whose pack state moves with time before every exchange."""

    def __init__(self, inner: Emulator, simulator: PackSimulator) -> None:
        self.inner = inner
        self.simulator = simulator

    @property
    def state(self) -> PackState:
        return self.inner.state

    @property
    def faults(self) -> Faults:
        return self.inner.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.inner.faults = faults

    def receive(self, data: bytes) -> list[bytes]:
        self.simulator.step(time.time())
        return self.inner.receive(data)

    def tick(self, now: float) -> list[bytes]:
        self.simulator.step(now)
        return self.inner.tick(now)


def configured_faults(spec: Any, device: str = "?") -> Faults | None:
    """`options.faults` as a Faults: the object itself, or one built from a mapping. Unknown keys and
    values of the wrong type are logged and left out, never raised (a typo must not stop the collector)."""
    if spec is None or isinstance(spec, Faults):
        return spec
    if not isinstance(spec, dict):
        log.warning("%s: options.faults must be a mapping, got %s; ignored", device, type(spec).__name__)
        return None
    fields = {f.name: f.type for f in dataclasses.fields(Faults)}
    values: dict[str, Any] = {}
    for key, value in spec.items():
        kind = fields.get(key)
        if kind is None:
            log.warning("%s: options.faults.%s is not a fault; allowed: %s", device, key, ", ".join(fields))
        elif kind in ("bool", bool) and isinstance(value, bool):
            values[key] = value
        elif kind in ("float", float) and isinstance(value, int | float) and not isinstance(value, bool) \
                and 0.0 <= value <= 1.0:
            values[key] = float(value)
        else:
            log.warning("%s: options.faults.%s = %r is not a valid %s; ignored", device, key, value,
                        "true/false" if kind in ("bool", bool) else "probability 0..1")
    return Faults(**values)


def simulated_link(dev: DeviceConfig, entry: ProtocolEntry) -> EmulatedLink:
    if entry.emulator is None:
        raise ValueError(f"protocol {entry.name!r} has no emulator to simulate")
    chemistry = dev.chemistry or "lfp"
    seed = zlib.crc32(dev.id.encode()) % 10_000 if dev.id else 0
    pack = make_pack(chemistry=chemistry, cells=dev.cells or DEFAULT_CELLS[chemistry],
                     capacity_ah=dev.capacity_ah or 100.0, soc=dev.soc if dev.soc is not None else 60.0,
                     name=dev.name, seed=seed)
    emulator = entry.emulator(pack)
    faults = configured_faults(dev.options.get("faults"), dev.id or dev.name)
    if faults is not None:
        emulator.faults = faults
    sim = PackSimulator(emulator.state, seed=seed, period_s=float(dev.options.get("period_s", 600.0)))
    mtu = entry.ble and 20  # BLE-shaped protocols arrive in notification-sized pieces, serial ones whole
    return EmulatedLink(SimulatedEmulator(emulator, sim), mtu=mtu or None, tick_period=1.0)
