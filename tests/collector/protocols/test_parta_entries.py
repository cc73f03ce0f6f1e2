"""Daly, JBD and ANT registry entries: the contract every entry keeps, and `bmsbus simulate daly_uart|jbd
--pty` (the generic serial simulator serves our emulators; the real drivers read them through a pty)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from bmsbus.collector.driver import Driver, DriverOptions
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.serial import SerialLink
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.daly.driver import DalyA5Driver
from bmsbus.collector.protocols.jbd.driver import JbdDriver
from bmsbus.shared.models import Sample
from bmsbus.shared.quantities import SAMPLE_KEYS


@pytest.mark.parametrize("protocol, driver", [("daly_uart", DalyA5Driver), ("jbd", JbdDriver)])
async def test_simulated_over_a_pty(protocol: str, driver: type[Driver]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bmsbus.collector.tools", "simulate", protocol, "--cells", "7",
                             "--static", "--pty"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert path.startswith("/dev/"), proc.stderr.read() if proc.stderr else ""
        async with SerialLink(path, REGISTRY[protocol].serial) as link:  # type: ignore[arg-type]
            drv = driver(link, DriverOptions(request_timeout=3.0))
            await drv.open()
            reading = await drv.read()
            assert len(reading["cell_voltages"]) == 7 and all(2.5 < v < 4.3 for v in reading["cell_voltages"])
            await drv.set_switch("charge", False)
            assert (await drv.read())["switches"]["charge"] is False
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize("name", ["daly", "daly_uart", "daly2", "jbd", "ant"])
async def test_entry_contract(name: str) -> None:
    """Catalog keys only; a driver over its own emulator reports exactly what it declares it can."""
    entry = REGISTRY[name]
    assert entry.driver.protocol == name and entry.family in ("daly", "jbd", "ant")
    assert entry.driver.quantities <= SAMPLE_KEYS
    assert (entry.ble is not None) or (entry.serial is not None)
    assert entry.emulator is not None and entry.decode is not None
    state = make_pack(cells=9, temperature_sensors=2)
    state.current, state.balancing = 3.0, [1]
    async with EmulatedLink(entry.emulator(state), mtu=20) as link:
        drv = entry.driver(link, DriverOptions(request_timeout=0.5))
        await drv.open()
        reading = await drv.read()
    assert set(reading) == entry.driver.quantities
    assert set(reading["switches"]) >= set(drv.writable_switches())
    Sample(bms="x", ts=1.0, boot="b", seq=0, **reading)  # valid on the bus
