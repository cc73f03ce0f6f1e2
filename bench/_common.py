"""Shared by the bench scripts: seed byte streams for every registered protocol, captured from its emulator.

Generic over REGISTRY: each protocol's own driver talks to its own emulator over an EmulatedLink (open() and a
couple of read()s) and every chunk the emulator sent is recorded with the driver's `on_chunk` hook. New
families plug in without changes here; a protocol whose driver also speaks a wire variant its registered
emulator does not (daly2's p81) lists the variant's emulator in VARIANT_EMULATORS, and its chunks are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bmsbus.collector.driver import DriverOptions, ProtocolEntry
from bmsbus.collector.emulation.base import PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.daly.emulator import DalyP81Emulator

# Wire variants a driver detects by itself but the registry's emulator does not speak.
VARIANT_EMULATORS: dict[str, tuple[Callable[[PackState], Any], ...]] = {
    "daly2": (DalyP81Emulator,),
}


@dataclass
class Seeds:
    protocol: str
    chunks: list[bytes]  # as received, in order
    error: str | None = None

    @property
    def stream(self) -> bytes:
        return b"".join(self.chunks)


async def _capture(entry: ProtocolEntry, reads: int, timeout: float) -> Seeds:
    seeds = Seeds(entry.name, [])
    if entry.emulator is None:
        seeds.error = "no emulator"
        return seeds
    emulator = entry.emulator(make_pack(cells=16, temperature_sensors=2, seed=1))
    if hasattr(emulator, "stream_interval"):
        emulator.stream_interval = 0.05  # streaming devices (JK BLE): don't wait a second per frame
    link = EmulatedLink(emulator, mtu=20 if entry.ble else None, tick_period=0.02)
    options = DriverOptions(request_timeout=timeout, options={"master_timeout": 0.2, "idle_gap": 0.05,
                                                               "cell_interval": 0.2, "stream_timeout": 0.5})
    try:
        async with link, asyncio.timeout(timeout * (reads + 3)):
            driver = entry.driver(link, options, log=logging.getLogger("bench.seeds"))
            driver.on_chunk = seeds.chunks.append
            await driver.open()
            for _ in range(reads):
                await driver.read()
    except Exception as exc:  # noqa: BLE001 - seeds are best effort; the codec is what is under test
        seeds.error = f"{type(exc).__name__}: {exc}"
    return seeds


def capture_seeds(names: list[str] | None = None, reads: int = 2, timeout: float = 1.0) -> dict[str, Seeds]:
    """{protocol: Seeds} for every REGISTRY entry with a decode function (or the given names)."""
    wanted = [n for n in sorted(REGISTRY) if REGISTRY[n].decode is not None and (names is None or n in names)]

    async def run() -> dict[str, Seeds]:
        out = {}
        for name in wanted:
            out[name] = seeds = await _capture(REGISTRY[name], reads, timeout)
            for variant in VARIANT_EMULATORS.get(name, ()):
                more = await _capture(replace(REGISTRY[name], emulator=variant), reads, timeout)
                seeds.chunks += more.chunks
                seeds.error = seeds.error or more.error
        return out

    logging.getLogger("bench.seeds").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run())
    return {}
