"""Daly 0xA5 protocol (`daly` over BLE, `daly_uart`): vectors, framing, round trips, garbage, drivers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parta_util import (
    assert_chunkings,
    assert_garbage_safe,
    assert_prefixes_incomplete,
    assert_rejects,
    batmon,
    hexes,
    proto,
    split_frames,
)

from bmsbus.collector.checksums import sum8
from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame, UsageError
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import Faults, PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.daly import a5
from bmsbus.collector.protocols.daly.a5 import Cmd, DalyA5Assembler
from bmsbus.collector.protocols.daly.driver import DalyA5Driver, DalyBleDriver
from bmsbus.collector.protocols.daly.emulator import DalyA5Emulator

PROTO = proto("daly_uart")


def one(wire: bytes) -> a5.Frame:
    frames, errors = split_frames(DalyA5Assembler(), [wire])
    assert not errors and len(frames) == 1
    return frames[0]


def by_description(text: str) -> dict:
    return next(e for e in PROTO if text in e["description"])


# --- vectors ------------------------------------------------------------------------------------------

def test_request_vectors_match_builders() -> None:
    e90 = by_description("Request 0x90 with host address")
    exp = e90["expected"]
    assert hexes(e90) == [a5.build_request(exp["data_id"], host) for host in exp["host_address"]]
    assert exp["host_address"] == [a5.HOST_BLE, a5.HOST_UART] and exp["data_id"] == Cmd.SOC
    assert all((w[0], w[3], len(w)) == (exp["start"], exp["length"], 13) for w in hexes(e90))
    e95 = by_description("Request 0x95")
    assert hexes(e95) == [a5.build_request(e95["expected"]["data_id"], e95["expected"]["host_address"])]
    assert (e95["expected"]["data_id"], e95["expected"]["host_address"]) == (Cmd.CELLS, a5.HOST_BLE)
    for e in batmon("daly", "request") + batmon("daly_uart", "request"):
        wire = bytes.fromhex(e["hex"])
        host = a5.HOST_BLE if e["bms_type"] == "daly" else a5.HOST_UART
        exp = e["expected"]
        if "switch" in exp:
            assert wire == a5.build_switch(exp["switch"], exp["state"], host)
        else:
            assert wire == a5.build_request(exp["cmd"], host)
        assert not a5.is_reply(one(wire))  # a request echoed on the bus is never taken for an answer


@pytest.mark.parametrize("entry", [e for e in PROTO if "0x90" in e["description"] and "response" in e["description"]],
                         ids=lambda e: e["frames_hex"][0])
def test_soc_frames(entry: dict) -> None:
    got = a5.decode_reading(one(hexes(entry)[0]))
    exp = entry["expected"]
    assert got["voltage"] == pytest.approx(exp["total_voltage"])
    assert got["soc"] == pytest.approx(exp["soc"])
    # mpp-solar states (raw - 30000) / 10 without a sign meaning; every raw here is > 30000, which most
    # sources read as discharging (protocols.md §4.5), i.e. negative in bmsbus's + = charging convention.
    assert got["current"] == pytest.approx(-exp["current"])


def test_detail_frames() -> None:
    cell_range = a5.describe(one(hexes(by_description("0x91"))[0]))
    exp = by_description("0x91")["expected"]
    assert (cell_range["max_cell_voltage"], cell_range["max_cell"]) == (exp["max_cell_voltage"], exp["max_cell_number"])
    assert (cell_range["min_cell_voltage"], cell_range["min_cell"]) == (exp["min_cell_voltage"], exp["min_cell_number"])
    temp_range = a5.describe(one(hexes(by_description("0x92"))[0]))
    assert {k: temp_range[k] for k in by_description("0x92")["expected"]} == by_description("0x92")["expected"]


@pytest.mark.parametrize("text", ["0x93 charge/discharge MOS status", "0x93 response with state=2"])
def test_mos_frames(text: str) -> None:
    entry = by_description(text)
    frame = one(hexes(entry)[0])
    got = a5.decode_reading(frame)
    exp = entry["expected"]
    assert got["charge"] == pytest.approx(exp["remaining_capacity_ah"])
    assert got["switches"] == {"charge": bool(exp["charging_mos"]), "discharge": bool(exp["discharging_mos"])}
    assert a5.state(frame) == (2 if text.endswith("state=2") else 0)
    assert a5.describe(frame)["life"] == exp["bms_life"]


def test_status_frame() -> None:
    entry = by_description("0x94")
    frame = one(hexes(entry)[0])
    assert a5.decode_reading(frame) == {"cycles": entry["expected"]["cycles"]}
    assert a5.counts(frame) == (entry["expected"]["cells"], entry["expected"]["temperature_sensors"])


@pytest.mark.parametrize("text, cells", [("16 frames of 13 bytes", 16), ("8 cells, truncated capture", 8)])
def test_cell_frames(text: str, cells: int) -> None:
    entry = by_description(text)
    frames, errors = split_frames(DalyA5Assembler(), hexes(entry))
    assert not errors  # Appendix B: the "truncated" capture is ten complete, checksum-valid frames
    parts = dict(a5.cell_frame(f) for f in frames)
    assert a5.collect(parts, cells, a5.CELLS_PER_FRAME) == entry["expected"]["cell_voltages"]
    # until the frames holding the first `cells` values are in, the answer is incomplete
    first = {n: v for n, v in parts.items() if n < a5.frames_needed(cells, a5.CELLS_PER_FRAME)}
    assert a5.collect(first, cells, a5.CELLS_PER_FRAME) is None


def test_temperature_frames() -> None:
    entry = by_description("0x96 temperatures")
    frames, _ = split_frames(DalyA5Assembler(), hexes(entry))
    parts = dict(a5.temp_frame(f) for f in frames)
    assert a5.collect(parts, 1, a5.TEMPS_PER_FRAME) == [entry["expected"]["temperature_1"]]


def test_batmon_responses() -> None:
    got = {}
    for e in batmon("daly", "response"):
        frame = one(bytes.fromhex(e["hex"]))
        reading = a5.decode_reading(frame)
        exp = e["expected"]
        if frame.kind == Cmd.MOS:
            assert a5.state(frame) == 1 and exp["mode"] == "charging"
            assert reading["charge"] == pytest.approx(exp["capacity_ah"])
            assert reading["switches"] == {"charge": exp["charging_mosfet"], "discharge": exp["discharging_mosfet"]}
        elif frame.kind == Cmd.STATUS:
            assert a5.counts(frame) == (exp["num_cells"], exp["num_temps"])
            assert reading["cycles"] == exp["num_cycles"]
            assert a5.describe(frame)["dio"] & 0x02  # DI2
        else:
            assert reading["voltage"] == pytest.approx(exp["voltage"])
            assert reading["soc"] == pytest.approx(exp["soc"])
            assert reading["current"] == pytest.approx(-exp["current"])  # batmon: + = discharge
        got[frame.kind] = True
    assert set(got) == {Cmd.SOC, Cmd.MOS, Cmd.STATUS}


def test_balance_and_failures() -> None:
    bal = a5.build_frame(a5.BMS_ADDRESS, Cmd.BALANCE, bytes((0b101, 0, 0x80, 0, 0, 0x80, 0, 0)))
    assert a5.decode_reading(one(bal)) == {"balancing": [0, 2, 23, 47]}
    fail = a5.build_frame(a5.BMS_ADDRESS, Cmd.FAILURES, bytes((0x01, 0x20, 0, 0x02, 0, 0x01, 0x04, 0x07)))
    got = a5.decode_reading(one(fail))
    assert got["alarms"] == ["cell_overvoltage_warning", "discharge_overtemperature", "cell_voltage_difference",
                             "afe_fault", "short_circuit"]
    assert got["problem_code"] == 0x0120000200010407
    assert a5.describe(one(fail))["fault_code"] == 7


def test_current_sign_cross_check() -> None:
    assert a5.current_sign_mismatch(-5.0, 2) is False
    assert a5.current_sign_mismatch(5.0, 2) is True
    assert a5.current_sign_mismatch(5.0, 1) is False
    assert a5.current_sign_mismatch(5.0, 0) is None
    assert a5.current_sign_mismatch(0.1, 1) is None


# --- framing ------------------------------------------------------------------------------------------

REPLIES = [h for e in PROTO for h in e["frames_hex"]] + [e["hex"] for e in batmon("daly", "response")]


@pytest.mark.parametrize("wire", REPLIES[:12], ids=lambda h: h[:12])
def test_chunkings(wire: str) -> None:
    assert_chunkings(DalyA5Assembler, bytes.fromhex(wire))


def test_prefixes_are_incomplete() -> None:
    assert_prefixes_incomplete(DalyA5Assembler, bytes.fromhex(REPLIES[2]))


GOOD = bytes.fromhex("a5019008021400007545037889")


@pytest.mark.parametrize("data, error", [
    (GOOD[:-1] + bytes((GOOD[-1] ^ 1,)), ChecksumError),
    (GOOD[:3] + b"\x09" + GOOD[4:], FramingError),
    (b"\x00\x01\x02", FramingError),
    (b"\x11" * 2000, FramingError),  # overflow and junk
])
def test_malformed(data: bytes, error: type) -> None:
    assert_rejects(DalyA5Assembler, data, error)


def test_resync_after_bad_frame() -> None:
    bad = GOOD[:-1] + b"\x00"
    frames, errors = split_frames(DalyA5Assembler(), [bad + b"\xa5\xa5" + GOOD])
    assert [f.raw for f in frames] == [GOOD] and errors


def test_unsupported_and_usage() -> None:
    with pytest.raises(UnsupportedFrame):
        a5.decode_reading(one(a5.build_frame(1, 0x50)))
    with pytest.raises(UsageError):
        a5.build_switch("heater", True)
    with pytest.raises(UsageError):
        a5.build_frame(1, 0x90, b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_codec_errors(data: bytes) -> None:
    assert_garbage_safe(DalyA5Assembler, a5.decode_chunks, data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([GOOD, bytes.fromhex(REPLIES[5])]), max_size=4), st.binary(max_size=40))
def test_garbage_around_frames_keeps_frames(frames: list[bytes], junk: bytes) -> None:
    """Frames behind junk are found again (junk without 0xA5 cannot swallow them)."""
    junk = junk.replace(b"\xa5", b"")
    got, _ = split_frames(DalyA5Assembler(), [junk + b"".join(frames)])
    assert [f.raw for f in got] == frames


# --- emulator round trip --------------------------------------------------------------------------------

def _roundtrip_state(draw: st.DrawFn) -> PackState:
    cells = draw(st.integers(1, 48))
    temps = draw(st.integers(0, 16))
    mv = st.integers(2000, 4300).map(lambda v: v / 1000)
    state = PackState(cell_voltages=draw(st.lists(mv, min_size=cells, max_size=cells)),
                      temperatures=[float(t) for t in draw(st.lists(st.integers(-40, 100), min_size=temps,
                                                                    max_size=temps))],
                      current=draw(st.integers(-3000, 3000)) / 10, soc=draw(st.integers(0, 1000)) / 10,
                      charge=draw(st.integers(0, 400_000)) / 1000, cycles=draw(st.integers(0, 65535)),
                      balancing=sorted(draw(st.sets(st.integers(0, cells - 1), max_size=4))),
                      alarms=draw(st.integers(0, (1 << 64) - 1)),
                      switches={"charge": draw(st.booleans()), "discharge": draw(st.booleans())})
    return state


roundtrip_states = st.composite(_roundtrip_state)


def _decode_answers(emu: DalyA5Emulator, command: int) -> list[a5.Frame]:
    frames, errors = split_frames(DalyA5Assembler(), emu.answer(command))
    assert not errors
    return frames


@settings(max_examples=200, deadline=None)
@given(roundtrip_states(), st.sampled_from(["uart", "ble"]), st.booleans())
def test_emulator_roundtrip(state: PackState, transport: str, inverted: bool) -> None:
    emu = DalyA5Emulator(state, transport=transport, inverted_current=inverted)
    soc = a5.decode_reading(_decode_answers(emu, Cmd.SOC)[0])
    assert soc["voltage"] == pytest.approx(round(state.voltage * 10) / 10)
    assert soc["current"] == pytest.approx(-state.current if inverted else state.current)
    assert soc["soc"] == pytest.approx(state.soc)
    mos = _decode_answers(emu, Cmd.MOS)[0]
    assert a5.decode_reading(mos) == {"charge": pytest.approx(state.charge), "switches": state.switches}
    assert a5.current_sign_mismatch(soc["current"], a5.state(mos)) in (None, inverted)
    status = _decode_answers(emu, Cmd.STATUS)[0]
    assert a5.counts(status) == (len(state.cell_voltages), len(state.temperatures))
    assert a5.decode_reading(status)["cycles"] == state.cycles
    cell_frames = _decode_answers(emu, Cmd.CELLS)
    assert len(cell_frames) == (16 if transport == "ble" else -(-len(state.cell_voltages) // 3))
    cells = a5.collect(dict(a5.cell_frame(f) for f in cell_frames), len(state.cell_voltages), 3)
    assert cells == state.cell_voltages
    if state.temperatures:
        temp_frames = _decode_answers(emu, Cmd.TEMPS)
        temps = a5.collect(dict(a5.temp_frame(f) for f in temp_frames), len(state.temperatures), 7)
        assert temps == state.temperatures
    assert a5.decode_reading(_decode_answers(emu, Cmd.BALANCE)[0])["balancing"] == state.balancing
    failures = a5.decode_reading(_decode_answers(emu, Cmd.FAILURES)[0])
    assert failures["problem_code"] == state.alarms


# --- drivers over the emulator --------------------------------------------------------------------------

def _opts(**options: object) -> DriverOptions:
    return DriverOptions(request_timeout=0.5, options=dict(options))


def _expected(state: PackState) -> dict:
    return {"voltage": pytest.approx(state.voltage, abs=0.06), "current": pytest.approx(state.current, abs=0.06),
            "soc": pytest.approx(state.soc, abs=0.06), "charge": pytest.approx(state.charge, abs=0.001),
            "cycles": state.cycles, "cell_voltages": pytest.approx(state.cell_voltages, abs=0.0006),
            "temperatures": [float(round(t)) for t in state.temperatures], "balancing": state.balancing,
            "switches": state.switches, "alarms": [], "problem_code": 0}


@pytest.mark.parametrize("driver, transport", [(DalyA5Driver, "uart"), (DalyBleDriver, "ble")])
@pytest.mark.parametrize("cells", [1, 4, 13, 16])
async def test_driver_reads_and_switches(driver: type[DalyA5Driver], transport: str, cells: int) -> None:
    state = make_pack(cells=cells, temperature_sensors=3, seed=cells)
    state.current, state.balancing, state.cycles = -7.5, [0], 12
    state.switches = {"charge": True, "discharge": True}
    emu = DalyA5Emulator(state, transport=transport)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = driver(link, _opts())
        info = await drv.open()
        assert info.extra["cell_count"] == str(cells)
        assert await drv.read() == _expected(state)
        assert {e for e in emu.requests if e >= 0x90} == {0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98}
        await drv.set_switch("discharge", False)
        assert state.switches["discharge"] is False
        assert (await drv.read())["switches"] == {"charge": True, "discharge": False}
        with pytest.raises(UsageError):
            await drv.set_switch("balance", True)
    host = a5.HOST_BLE if transport == "ble" else a5.HOST_UART
    assert emu.assembler is not None and drv.host == host


async def test_driver_learns_inverted_current_sign() -> None:
    state = make_pack(cells=4)
    state.current = 9.0
    emu = DalyA5Emulator(state, inverted_current=True)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = DalyA5Driver(link, _opts())
        await drv.open()
        assert (await drv.read())["current"] == pytest.approx(9.0)  # the first telling sample decides
        state.current = -4.0
        assert (await drv.read())["current"] == pytest.approx(-4.0)
        state.current = 0.0
        assert (await drv.read())["current"] == 0.0
        assert drv.learned_invert is True


@pytest.mark.parametrize("option, expected", [("inverted", 6.0), ("normal", -6.0), ("Auto", -6.0)])
async def test_driver_forced_sign(option: str, expected: float) -> None:
    state = make_pack(cells=4)
    state.current = -6.0  # the emulated firmware uses the default sign; a forced option overrides the check
    async with EmulatedLink(DalyA5Emulator(state), mtu=None) as link:
        drv = DalyA5Driver(link, _opts(current_sign=option))
        await drv.open()
        assert (await drv.read())["current"] == pytest.approx(expected)
        with pytest.raises(UsageError):
            DalyA5Driver(link, _opts(current_sign="backwards"))


class _NoFailures(DalyA5Emulator):
    def answer(self, command: int, data: bytes = bytes(8)) -> list[bytes]:
        return [] if command == Cmd.FAILURES else super().answer(command, data)


async def test_driver_skips_unanswered_optional_reads() -> None:
    state = make_pack(cells=5)
    emu = _NoFailures(state)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = DalyA5Driver(link, DriverOptions(request_timeout=0.2, options={"address": "0x80"}))
        await drv.open()
        first = await drv.read()
        assert "alarms" not in first and "balancing" in first
        asked = emu.requests.count(Cmd.FAILURES)
        await drv.read()
        assert emu.requests.count(Cmd.FAILURES) == asked  # not asked again this session
    assert drv.host == 0x80


async def test_driver_survives_junk_before_every_frame() -> None:
    state = make_pack(cells=8)
    emu = DalyA5Emulator(state, faults=Faults(junk=1.0), seed=3)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = DalyBleDriver(link, _opts())
        await drv.open()
        reading = await drv.read()
    assert reading["cell_voltages"] == pytest.approx(state.cell_voltages, abs=0.0006)
    assert drv.codec_errors > 0


def test_registry_entries() -> None:
    ble, uart = REGISTRY["daly"], REGISTRY["daly_uart"]
    assert ble.ble is not None and ble.driver is DalyBleDriver and ble.serial is None
    assert uart.serial is not None and uart.serial.baudrate == 9600 and uart.driver is DalyA5Driver
    for entry in (ble, uart):
        emu = entry.emulator(make_pack(cells=4))  # type: ignore[misc]
        assert emu.receive(a5.build_request(Cmd.SOC)) and entry.decode is not None
        assert entry.driver.quantities <= {"voltage", "current", "soc", "charge", "cycles", "cell_voltages",
                                           "temperatures", "balancing", "switches", "alarms", "problem_code"}
    decoded = REGISTRY["daly_uart"].decode([GOOD[:5], GOOD[5:], b"\x00"])  # type: ignore[misc]
    assert decoded[0]["voltage"] == 53.2 and "error" in decoded[1]
    assert sum8(GOOD[:12]) == GOOD[12]
