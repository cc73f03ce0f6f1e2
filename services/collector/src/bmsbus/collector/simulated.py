"""The `simulated` device type: an emulated BMS, moved by a PackSimulator, reached through EmulatedLink.

Samples still go through the protocol's real driver and codec: the emulator produces byte-exact frames
and the collector decodes them exactly as it would decode a real device's.
"""

from __future__ import annotations

import time
import zlib

from bmsbus.shared.config import DeviceConfig

from .driver import ProtocolEntry
from .emulation.base import Emulator, Faults, PackSimulator, PackState, make_pack
from .links.emulated import EmulatedLink

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

    def receive(self, data: bytes) -> list[bytes]:
        self.simulator.step(time.time())
        return self.inner.receive(data)

    def tick(self, now: float) -> list[bytes]:
        self.simulator.step(now)
        return self.inner.tick(now)


def simulated_link(dev: DeviceConfig, entry: ProtocolEntry) -> EmulatedLink:
    if entry.emulator is None:
        raise ValueError(f"protocol {entry.name!r} has no emulator to simulate")
    chemistry = dev.chemistry or "lfp"
    seed = zlib.crc32(dev.id.encode()) % 10_000 if dev.id else 0
    pack = make_pack(chemistry=chemistry, cells=dev.cells or DEFAULT_CELLS[chemistry],
                     capacity_ah=dev.capacity_ah or 100.0, soc=dev.soc if dev.soc is not None else 60.0,
                     name=dev.name, seed=seed)
    emulator = entry.emulator(pack)
    sim = PackSimulator(emulator.state, seed=seed, period_s=float(dev.options.get("period_s", 600.0)))
    mtu = entry.ble and 20  # BLE-shaped protocols arrive in notification-sized pieces, serial ones whole
    return EmulatedLink(SimulatedEmulator(emulator, sim), mtu=mtu or None, tick_period=1.0)
