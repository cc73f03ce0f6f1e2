"""Contract checks over the Supervolt, SOK, LiTime, Victron, noname Modbus, Basen and PACE entries."""

from __future__ import annotations

import pytest

from bmsbus.collector.codec import UsageError
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import PackSimulator, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import FAMILIES, REGISTRY
from bmsbus.shared.quantities import SAMPLE_KEYS

NAMES = ["supervolt", "supervolt_ff00", "sok", "litime", "victron", "noname_modbus", "basen", "basen_uart",
         "pace_uart"]
FAMILY_NAMES = {"supervolt", "sok", "litime", "victron", "noname_modbus", "basen", "pace"}


def test_families_are_registered() -> None:
    assert FAMILY_NAMES <= {f.__name__.rsplit(".", 1)[-1] for f in FAMILIES}
    assert set(NAMES) == {n for n, e in REGISTRY.items() if e.family in FAMILY_NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_entry_shape(name: str) -> None:
    entry = REGISTRY[name]
    assert entry.decode is not None and entry.emulator is not None
    assert (entry.ble is None) != (entry.serial is None)
    assert entry.driver.quantities <= SAMPLE_KEYS
    assert entry.driver.protocol == name
    assert entry.decode([]) == []


@pytest.mark.parametrize("name", NAMES)
async def test_simulated_pack_reads_every_declared_quantity(name: str) -> None:
    """The `simulated` device path: a moving pack, the real driver and codec, BLE-sized chunks or whole."""
    entry = REGISTRY[name]
    pack = make_pack(cells=16, capacity_ah=100.0, soc=60.0, temperature_sensors=4, seed=3)
    emulator = entry.emulator(pack)  # type: ignore[misc]
    sim = PackSimulator(pack, seed=3, period_s=5.0)
    sim.step(0.0)
    sim.step(1.0)
    options = {"capacity_ah": 100.0, "cell_wait": 0.05} if name in ("victron", "sok") else {}
    async with EmulatedLink(emulator, mtu=20 if entry.ble else None, tick_period=0.05) as link:
        driver = entry.driver(link, DriverOptions(request_timeout=3.0, options=options))
        await driver.open()
        reading = await driver.read()
        assert driver.quantities <= set(reading), driver.quantities - set(reading)
        assert reading["voltage"] == pytest.approx(pack.voltage, abs=0.011)
        assert reading["current"] == pytest.approx(pack.current, abs=0.1)
        if "cell_voltages" in reading:
            assert reading["cell_voltages"] == pytest.approx(pack.cell_voltages, abs=1e-9)
        assert driver.writable_switches() == ()
        with pytest.raises(UsageError):
            await driver.set_switch("charge", False)
