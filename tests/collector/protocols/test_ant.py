"""ANT BMS 7E A1 (`ant`): vectors, the device-info length quirk, framing, round trips, garbage, driver."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parta_util import (
    aio,
    assert_chunkings,
    assert_garbage_safe,
    assert_prefixes_incomplete,
    assert_rejects,
    batmon,
    hexes,
    split_frames,
)

from bmsbus.collector.codec import ChecksumError, Frame, FramingError, UnsupportedFrame, UsageError
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import Faults, PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.ant import codec as ant
from bmsbus.collector.protocols.ant.driver import AntDriver
from bmsbus.collector.protocols.ant.emulator import AntEmulator

AIO = aio("ant_bms")
(BATMON_STATUS,) = batmon("ant", "response")


def one(wire: bytes) -> Frame:
    frames, errors = split_frames(ant.AntAssembler(), [wire])
    assert not errors and len(frames) == 1, errors
    return frames[0]


# --- vectors ------------------------------------------------------------------------------------------

def test_requests_match_builders() -> None:
    for b in batmon("ant", "request"):
        wire = bytes.fromhex(b["hex"])
        exp = b["expected"]
        if exp["func"] == ant.FUNC_STATUS:
            assert wire == ant.build_status_request()
        elif exp["func"] == ant.FUNC_DEVICE_INFO:
            assert wire == ant.build_device_info_request()
        elif exp["switch"] == "buzzer":
            assert wire == ant.build_frame(ant.FUNC_WRITE, exp["register"], 0)
            assert exp["register"] == ant.BUZZER_REGISTERS[0 if exp["state"] else 1]
        else:
            assert wire == ant.build_switch(exp["switch"], exp["state"])
        assert one(wire).kind == exp["func"]  # requests frame too (10 bytes, no data)
    for e in AIO:
        assert e["requests_hex"] == [ant.build_status_request().hex()]


def test_batmon_capture() -> None:
    got = ant.decode_status(one(bytes.fromhex(BATMON_STATUS["hex"])))
    exp = BATMON_STATUS["expected"]
    # batmon does not negate ANT current (protocols.md §0.3), so its value is already + = charging; 0 here.
    assert got["current"] == exp["current"] == 0.0
    assert (got["voltage"], got["soc"], got["soh"]) == (exp["voltage"], exp["soc"], exp["soh"])
    assert (got["charge"], got["design_capacity"]) == (exp["charge"], exp["capacity"])
    assert got["cycle_charge"] == exp["total_charge_throughput"]
    assert [round(v * 1000) for v in got["cell_voltages"]] == exp["cell_voltages_mv"]
    assert got["mos_temperature"] == exp["mos_temperature"]
    # both pack sensors read 0xFFD8 = -40 °C, ANT's "no sensor" (batmon drops them as absent too)
    assert "temperatures" not in got
    # MOS status order (protocols.md §7.2): byte 46 = 1, 47 = 2 at 100 % SoC, 3.54 V/cell, I = 0, protection
    # bit 0x02. Read discharge-first (the default, batmon's order) that is "charge MOS off: cell overvoltage",
    # as batmon's author recorded it; read charge-first it would be "discharge MOS off: cell undervoltage" on a
    # full pack, which cannot be.
    assert {k: got["switches"][k] for k in ("charge", "discharge")} == exp["switches"]
    assert got["alarms"] == ["cell_overvoltage"] and got["problem_code"] == 0x02
    raw = bytes.fromhex(BATMON_STATUS["hex"])
    assert raw[10] == 0x02 and min(got["cell_voltages"]) > 3.5 and got["soc"] == 100  # a full pack
    other = ant.decode_status(one(raw), charge_first=True)
    assert other["switches"] == {"charge": True, "discharge": False, "balance": False}
    assert other["alarms"] == ["cell_undervoltage"] and other["problem_code"] == 0x0200


@pytest.mark.parametrize("e", AIO, ids=lambda e: e["test"].split("::")[-1])
def test_aiobmsble_replays(e: dict) -> None:
    frames, errors = split_frames(ant.AntAssembler(), hexes(e))
    assert not errors and len(frames) == 1
    got = ant.decode_status(frames[0])
    exp = e["expected"]
    assert (got["voltage"], got["current"], got["power"]) == (exp["voltage"], exp["current"], exp["power"])
    assert (got["soc"], got["soh"]) == (exp["battery_level"], exp["battery_health"])
    assert got["design_capacity"] == exp["design_capacity"]
    assert got["charge"] == exp["cycle_charge"]  # aiobmsble's cycle_charge is the remaining charge
    assert int(got["cycle_charge"]) == exp["total_charge"]  # its total_charge (floored Ah) is our throughput
    assert got["cell_voltages"] == exp["cell_voltages"] and len(got["cell_voltages"]) == exp["cell_count"]
    generic = [t["value"] for t in exp["temp_values"] if t["type"] == "GENERIC"]
    (mos,) = [t["value"] for t in exp["temp_values"] if t["type"] == "MOSFET"]
    assert got["temperatures"] == generic and got["mos_temperature"] == mos
    assert got["switches"] == {"charge": exp["chrg_mosfet"], "discharge": exp["dischrg_mosfet"],
                               "balance": exp["balancer"]}
    assert got["problem_code"] == exp["problem_code"] and bool(got["alarms"]) == exp["problem"]
    assert ant.describe(frames[0])["delta_cell_voltage"] == exp["delta_voltage"]


def test_device_info_quirk() -> None:
    """Real units say len 0x20 but send 6 more bytes after the CRC before AA 55 (esphome-ant-bms)."""
    state = make_pack(cells=4)
    state.model, state.sw_version = "16ZMB", "16ZMUB00-211026A"
    quirky = AntEmulator(state).device_info()
    exact = AntEmulator(state, exact_device_info=True).device_info()
    assert len(quirky) == 48 and len(exact) == 42 and quirky[5] == exact[5] == 0x20
    for wire in (quirky, exact):
        info = ant.decode_device_info(one(wire))
        assert (info.model, info.hw_version, info.sw_version) == ("16ZMB", "16ZMB", "16ZMUB00-211026A")
        assert_chunkings(ant.AntAssembler, wire)
        assert_prefixes_incomplete(ant.AntAssembler, wire)


# --- framing ------------------------------------------------------------------------------------------

STATUS = bytes.fromhex(BATMON_STATUS["hex"])
AIO_STATUS = bytes.fromhex(AIO[0]["frames_hex_reassembled"][0])


@pytest.mark.parametrize("wire", [STATUS, AIO_STATUS, ant.build_status_request(), ant.build_switch("charge", True)],
                         ids=["batmon", "aio", "request", "write"])
def test_chunkings(wire: bytes) -> None:
    assert_chunkings(ant.AntAssembler, wire)


def test_prefixes_are_incomplete() -> None:
    assert_prefixes_incomplete(ant.AntAssembler, STATUS)


@pytest.mark.parametrize("data, error", [
    (STATUS[:-4] + bytes((STATUS[-4] ^ 1,)) + STATUS[-3:], ChecksumError),
    (STATUS[:-2] + b"\xaa\x56", FramingError),  # tail
    (b"\x01\x02\x03", FramingError),
    (b"\x7e\xa1\x11\x00\x00\xff" + bytes(2000), FramingError),  # overflow
])
def test_malformed(data: bytes, error: type) -> None:
    assert_rejects(ant.AntAssembler, data, error)


def test_unsupported_and_usage() -> None:
    with pytest.raises(UnsupportedFrame):
        ant.decode_status(one(ant.build_reply(ant.FUNC_STATUS, 0, bytes(10))))  # too short
    with pytest.raises(UnsupportedFrame):
        ant.decode_status(one(ant.build_status_request()))
    with pytest.raises(UsageError):
        ant.build_switch("heater", True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_codec_errors(data: bytes) -> None:
    assert_garbage_safe(ant.AntAssembler, ant.decode_chunks, data)


# --- emulator round trip --------------------------------------------------------------------------------

@st.composite
def states(draw: st.DrawFn) -> PackState:
    cells = draw(st.integers(1, 32))
    temps = draw(st.integers(0, 8))
    return PackState(
        cell_voltages=[v / 1000 for v in draw(st.lists(st.integers(2000, 4300), min_size=cells, max_size=cells))],
        temperatures=[float(t) for t in draw(st.lists(st.integers(-39, 100), min_size=temps, max_size=temps))],
        mos_temperature=float(draw(st.integers(-30, 120))),
        current=draw(st.integers(-3000, 3000)) / 10, soc=float(draw(st.integers(0, 100))),
        soh=float(draw(st.integers(0, 100))), charge=draw(st.integers(0, 400_000)) / 1000,
        design_capacity=draw(st.integers(1, 400_000)) / 1000, cycle_charge=draw(st.integers(0, 10**9)) / 1000,
        uptime=float(draw(st.integers(0, 2**32 - 1))),
        balancing=sorted(draw(st.sets(st.integers(0, cells - 1), max_size=5))),
        switches={"charge": draw(st.booleans()), "discharge": draw(st.booleans()), "balance": draw(st.booleans())})


@settings(max_examples=200, deadline=None)
@given(states())
def test_emulator_roundtrip(state: PackState) -> None:
    emu = AntEmulator(state)
    (wire,) = emu.receive(ant.build_status_request())
    got = ant.decode_status(one(wire))
    assert got["cell_voltages"] == state.cell_voltages
    assert got.get("temperatures", []) == state.temperatures and got["mos_temperature"] == state.mos_temperature
    assert got["voltage"] == pytest.approx(round(state.voltage * 100) / 100)
    assert got["current"] == pytest.approx(state.current) and got["soc"] == state.soc and got["soh"] == state.soh
    assert got["charge"] == pytest.approx(state.charge) and got["design_capacity"] == pytest.approx(
        state.design_capacity)
    assert got["cycle_charge"] == pytest.approx(state.cycle_charge) and got["uptime"] == state.uptime
    assert got["power"] == round(state.voltage * state.current)
    assert got["switches"] == state.switches and got["balancing"] == state.balancing
    assert got["alarms"] == [] and got["problem_code"] == 0


@pytest.mark.parametrize("charge_code, discharge_code, alarms, problem", [
    (0x02, 0x00, ["cell_overvoltage"], 0x0002),
    (0x00, 0x0C, ["short_circuit"], 0x0C00),
    (0x0E, 0x0E, ["charge_waiting", "discharge_mos_open_failed"], 0x0E0E),
    (0x04, 0x04, [], 0),  # battery full / two-level current: normal per protocols.md §7.2
    (0x13, 0x0B, ["charge_mos_fault_19", "discharge_mos_fault_11"], 0x0B13),
])
def test_mos_status_codes(charge_code: int, discharge_code: int, alarms: list[str], problem: int) -> None:
    state = make_pack(cells=4)
    state.alarms = discharge_code << 8 | charge_code
    got = ant.decode_status(one(AntEmulator(state).receive(ant.build_status_request())[0]))
    assert (got["alarms"], got["problem_code"]) == (alarms, problem)
    assert got["switches"]["charge"] is (charge_code == 0)  # 0: the emulator reports its switch (on)


# --- driver over the emulator ----------------------------------------------------------------------------

def _opts(**options: object) -> DriverOptions:
    return DriverOptions(request_timeout=0.3, options=dict(options))


@pytest.mark.parametrize("secret", [None, "12345678"])
async def test_driver_reads_and_switches(secret: str | None) -> None:
    state = make_pack(cells=16, temperature_sensors=4)
    state.current, state.balancing, state.model, state.sw_version = 25.5, [2], "24AHA", "24AHUB00-220915A"
    emu = AntEmulator(state, secret=secret)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = AntDriver(link, _opts(**({"secret": secret} if secret else {})))
        info = await drv.open()
        assert (info.manufacturer, info.model, info.sw_version) == ("ANT", "24AHA", "24AHUB00-220915A")
        got = await drv.read()
        assert got["current"] == 25.5 and got["cell_voltages"] == state.cell_voltages and got["balancing"] == [2]
        assert set(got) <= AntDriver.quantities
        for name in ("charge", "discharge", "balance"):
            await drv.set_switch(name, False)
            assert state.switches[name] is False and (await drv.read())["switches"][name] is False
            await drv.set_switch(name, True)
            assert state.switches[name] is True
        with pytest.raises(UsageError):
            await drv.set_switch("heater", True)
    assert (ant.FUNC_WRITE, 0x0004) in emu.requests and (ant.FUNC_WRITE, 0x0006) in emu.requests


async def test_driver_without_device_info_and_with_junk() -> None:
    state = make_pack(cells=8)

    class Silent(AntEmulator):
        def answer(self, func: int, address: int, raw: bytes) -> list[bytes]:
            return [] if func == ant.FUNC_DEVICE_INFO else super().answer(func, address, raw)

    async with EmulatedLink(Silent(state, faults=Faults(junk=1.0), seed=2), mtu=20) as link:
        drv = AntDriver(link, _opts())
        assert (await drv.open()).model is None
        assert (await drv.read())["cell_voltages"] == state.cell_voltages
        assert drv.codec_errors > 0


def test_registry_entry() -> None:
    e = REGISTRY["ant"]
    assert e.ble is not None and (e.ble.service, e.ble.notify, e.ble.write) == ("ffe0", "ffe1", "ffe1")
    assert e.driver is AntDriver and e.emulator is not None and e.decode is not None
    out = e.decode(e.emulator(make_pack(cells=4)).receive(ant.build_status_request()))
    assert out[0]["cell_count"] == 4 and out[0]["battery_status"] == "idle"


@pytest.mark.parametrize("options, charge_first", [
    ({}, False), ({"mos_status_order": "discharge_first"}, False), ({"mos_status_order": "Charge_First"}, True),
    ({"swap_mos_status": True}, False), ({"swap_mos_status": False}, True),  # the legacy option, as documented
])
async def test_mos_status_order_option(options: dict, charge_first: bool) -> None:
    """The override: a unit with the other byte order (emulated) reads right with the matching option and
    swapped without it; switching `charge` changes `charge`."""
    state = make_pack(cells=8)
    state.switches = {"charge": False, "discharge": True, "balance": False}
    async with EmulatedLink(AntEmulator(state, charge_first=charge_first), mtu=20) as link:
        drv = AntDriver(link, _opts(**options))
        await drv.open()
        assert {k: v for k, v in (await drv.read())["switches"].items() if k != "balance"} == \
            {"charge": False, "discharge": True}
        await drv.set_switch("charge", True)
        assert (await drv.read())["switches"]["charge"] is True
    (frame,) = split_frames(ant.AntAssembler(), AntEmulator(state, charge_first=charge_first).receive(
        ant.build_status_request()))[0]
    wrong = ant.decode_status(frame, charge_first=not charge_first)["switches"]
    assert (wrong["charge"], wrong["discharge"]) == (state.switches["discharge"], state.switches["charge"])


def test_mos_status_order_rejects_unknown_values() -> None:
    from bmsbus.collector.protocols.ant.driver import mos_order

    with pytest.raises(UsageError, match="mos_status_order"):
        mos_order({"mos_status_order": "sideways"})
