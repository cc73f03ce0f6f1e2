"""JBD / Xiaoxiang / Overkill (`jbd`): vectors, framing, round trips, garbage, driver (0xE1 logic)."""

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
    proto,
    split_frames,
)

from bmsbus.collector.codec import ChecksumError, Frame, FramingError, UnsupportedFrame, UsageError
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import Faults, PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.jbd import codec as jbd
from bmsbus.collector.protocols.jbd.driver import JbdDriver
from bmsbus.collector.protocols.jbd.emulator import JbdEmulator

PROTO = proto("jbd")
AIO = aio("jbd_bms")


def frames_of(chunks: list[bytes]) -> tuple[list[Frame], list]:
    return split_frames(jbd.JbdAssembler(), chunks)


def one(wire: bytes) -> Frame:
    frames, errors = frames_of([wire])
    assert not errors and len(frames) == 1, errors
    return frames[0]


def entry(text: str) -> dict:
    return next(e for e in PROTO if text in e["description"])


def mos(state: PackState) -> dict[str, bool]:
    """The two MOS switches of an emulated pack (make_pack also has a "balance" switch)."""
    return {name: state.switches[name] for name in ("charge", "discharge")}


# --- vectors ------------------------------------------------------------------------------------------

def test_requests_match_builders() -> None:
    e = entry("Requests 0x03")
    exp = e["expected"]
    wires = hexes(e)
    assert exp["read_marker"] == jbd.READ and exp["registers"] == [
        jbd.REG_BASIC, jbd.REG_CELLS, jbd.REG_VERSION, jbd.REG_ERROR_COUNTERS]
    assert [(w[1], w[2]) for w in wires] == [(exp["read_marker"], r) for r in exp["registers"]]
    assert wires == [jbd.build_request(r) for r in exp["registers"]]
    soc = entry("register 0x0A writes")
    assert hexes(soc) == [jbd.build_request(0x0A, v.to_bytes(2, "big"), write=True) for v in soc["expected"]["values"]]
    for b in batmon("jbd", "request"):
        wire = bytes.fromhex(b["hex"])
        if b["expected"]["cmd"] == jbd.REG_MOS:
            assert wire == jbd.build_mos(True, True)
        else:
            assert wire == jbd.build_request(b["expected"]["cmd"])


def test_mos_writes_syssi() -> None:
    """syssi's unit test: E1 data 0..3, bit0 = charge MOS OFF, bit1 = discharge MOS OFF. The emulator applies
    each write (switches, software-lock bit 12) and the read-back reports it."""
    e = entry("E1 data 0x0000..0x0003")
    exp = e["expected"]
    assert exp["meaning"] == "bit0 = charge MOS OFF, bit1 = discharge MOS OFF"
    wires = hexes(e)
    assert len(wires) == len(exp["values"]) == 4
    for wire, value in zip(wires, exp["values"], strict=True):
        charge_on, discharge_on = not value & 0x01, not value & 0x02
        assert wire == jbd.build_mos(charge_on, discharge_on)
        assert wire[4:6] == jbd.mos_data(charge_on, discharge_on) == value.to_bytes(2, "big")
        state = make_pack(cells=4)
        emu = JbdEmulator(state)
        assert emu.receive(wire) == [jbd.build_reply(jbd.REG_MOS)]
        assert mos(state) == {"charge": charge_on, "discharge": discharge_on} and emu.lock == bool(value)
        (basic,) = emu.receive(jbd.build_request(jbd.REG_BASIC))
        got = jbd.decode_basic(one(basic))
        assert got["switches"] == {"charge": charge_on, "discharge": discharge_on}
        assert ("mos_software_lock" in got["alarms"]) == bool(value)


# "<data hex> = <meaning>" in the E1 capture's expectation -> (charge on, discharge on)
E1_MEANINGS = {"charge MOS off": (False, True), "both on": (True, True), "discharge MOS off": (True, False)}
DOC_MOS_COMMANDS = {"software closes discharge MOS": (True, False)}  # the JBD doc's "close" = switch off


def test_mos_capture() -> None:
    """syssi's E1 capture: the writes, the exit-factory frames and the replies, byte for byte; our own requests
    are never taken for replies; the emulator answers the capture's tx side with exactly its rx side."""
    e = entry("MOS control (0xE1) writes and replies")
    exp = e["expected"]
    wires = hexes(e)
    tx = [w for w, d in zip(wires, e["direction"], strict=True) if d == "tx"]
    rx = [w for w, d in zip(wires, e["direction"], strict=True) if d == "rx"]
    described = []
    for text in exp["E1_data"]:
        data, meaning = (part.strip() for part in text.split("="))
        described.append((bytes.fromhex(data), E1_MEANINGS[meaning]))
    assert [jbd.mos_data(*combo) for _, combo in described] == [data for data, _ in described]
    # the description names three writes, the capture holds the first two (protocols.md Appendix B)
    e1_writes = [w for w in tx if w[2] == jbd.REG_MOS]
    assert e1_writes == [jbd.build_mos(*combo) for _, combo in described[:2]]
    assert [w[4:6] for w in e1_writes] == [data for data, _ in described[:2]]
    reply = bytes.fromhex(exp["reply"])
    assert reply == jbd.build_reply(jbd.REG_MOS)
    exit_factory = bytes.fromhex(exp["exit_factory"].split("(")[0])
    assert "without writing" in exp["exit_factory"]
    assert exit_factory == jbd.build_request(jbd.REG_EXIT_FACTORY, b"\x00\x00", write=True)
    assert tx == [e1_writes[0], exit_factory, e1_writes[1], exit_factory]
    assert rx == [reply, jbd.build_reply(jbd.REG_EXIT_FACTORY)] * 2

    frames, errors = frames_of(wires)
    assert all(isinstance(err, FramingError) for err in errors)  # status byte 0x02 is no status: junk only
    assert [f.raw for f in frames] == rx
    assert [(f.kind, jbd.status(f), jbd.payload(f)) for f in frames] == [
        (jbd.REG_MOS, jbd.STATUS_OK, b""), (jbd.REG_EXIT_FACTORY, jbd.STATUS_OK, b"")] * 2

    state = make_pack(cells=4)
    emu = JbdEmulator(state)
    assert [emu.receive(w) for w in tx] == [[r] for r in rx]
    assert mos(state) == {"charge": True, "discharge": True} and not emu.lock and not emu.factory


def test_basic_info_syssi() -> None:
    e = entry("JBD-SP04S034-L4S-200A-B-U, 4S")
    frame = one(hexes(e)[0])
    got = jbd.decode_basic(frame)
    exp = e["expected"]
    assert (got["voltage"], got["current"], got["charge"], got["design_capacity"]) == (
        exp["total_voltage"], exp["current"], exp["capacity_remaining_ah"], exp["nominal_capacity_ah"])
    assert (got["cycles"], got["soc"], got["problem_code"], got["balancing"]) == (
        exp["cycles"], exp["soc"], exp["protection_bitmask"], [])
    assert got["switches"] == {"charge": True, "discharge": True}  # fet_status 3
    assert got["temperatures"] == exp["temperatures"]
    assert jbd.basic_counts(frame) == (exp["cell_count"], exp["ntc_count"])
    info = jbd.basic_info(frame)
    assert info.sw_version == "8.0" and info.extra["production_date"] == "2022-03-28"  # raw 11388


def test_cells_version_and_new_firmware_tail() -> None:
    assert jbd.decode_cells(one(hexes(entry("Cell voltages (0x04) response, 4S"))[0])) == {
        "cell_voltages": entry("Cell voltages (0x04) response, 4S")["expected"]["cell_voltages"]}
    hw = entry("Hardware version (0x05)")
    frame = one(hexes(hw)[0])
    assert jbd.decode_version(frame) == hw["expected"]["device_model"]
    assert jbd.describe(frame)["model"] == hw["expected"]["device_model"]
    e = entry("JBD-DP04S007L4S100A")
    got = jbd.decode_basic(one(hexes(e)[0]))
    exp = e["expected"]
    assert (got["voltage"], got["charge"], got["design_capacity"], got["cycles"], got["soc"]) == (
        exp["total_voltage"], exp["capacity_remaining_ah"], exp["nominal_capacity_ah"], exp["cycles"], exp["soc"])
    assert got["temperatures"] == [exp["temperature_1"]]  # the 9 unknown tail bytes are ignored
    assert jbd.describe(one(hexes(e)[0]))["tail"] == exp["extra_bytes_after_ntc"]


def test_doc_examples() -> None:
    """The JBD doc's section III examples (via mpp-solar): 15 cells, a version string, a MOS command."""
    e = entry("doc examples")
    exp = e["expected"]
    cells, version, command = hexes(e)
    got = jbd.decode_cells(one(cells))["cell_voltages"]
    assert len(got) == 15 and got[0] == exp["cell_voltage_1"]
    assert jbd.decode_version(one(version)) == exp["version"]
    assert command == jbd.build_mos(*DOC_MOS_COMMANDS[exp["mos_command"]])
    state = make_pack(cells=4)
    JbdEmulator(state).receive(command)
    assert mos(state) == {"charge": True, "discharge": False}


def test_error_counters() -> None:
    e = entry("Error counters (0xAA)")
    got = jbd.error_counters(one(hexes(e)[0]))
    renamed = {"battery_overvoltage": "pack_overvoltage", "battery_undervoltage": "pack_undervoltage"}
    assert got == {renamed.get(k, k): v for k, v in e["expected"].items()}
    assert jbd.describe(one(hexes(e)[0]))["error_counters"]["cell_overvoltage"] == 122


def test_zero_ntc_frame() -> None:
    """JBD-SP25S003-L16S-100A: len 0x17 basic info (no NTC list) and a 16-cell 0x04 reply."""
    e = entry("0 NTCs")
    exp = e["expected"]
    basic, cells = (one(w) for w in hexes(e))
    got = jbd.decode_basic(basic)
    assert "temperatures" not in got and exp["ntc_count"] == 0
    assert (got["voltage"], got["design_capacity"], got["soc"]) == (
        exp["total_voltage"], exp["nominal_capacity_ah"], exp["soc"])
    fet = exp["fet_status"]  # bit0 charge MOS on, bit1 discharge MOS on
    assert got["switches"] == {"charge": bool(fet & 0x01), "discharge": bool(fet & 0x02)}
    assert jbd.basic_counts(basic) == (exp["cell_count"], exp["ntc_count"])
    sw = exp["software_version_raw"]
    assert jbd.basic_info(basic).sw_version == f"{sw >> 4}.{sw & 0x0F}"
    described = jbd.describe(basic)
    assert (described["cell_count"], described["ntc_count"], described["tail"]) == (
        exp["cell_count"], exp["ntc_count"], "")
    voltages = jbd.decode_cells(cells)["cell_voltages"]
    assert len(voltages) == exp["cell_count"] and voltages == [3.6] * 15 + [0.0]  # 0 mV slots are kept


def test_payload_only_captures() -> None:
    """syssi stores these without header and checksum: wrap them in a reply and decode."""
    e = entry("Payload-only")
    for wire, exp in zip(hexes(e), (e["expected"]["frame1"], e["expected"]["frame2"]), strict=True):
        got = jbd.decode_basic(one(jbd.build_reply(jbd.REG_BASIC, wire)))
        assert (got["voltage"], got["charge"], got["design_capacity"], got["soc"]) == (
            exp["total_voltage"], exp["capacity_remaining_ah"], exp["nominal_capacity_ah"], exp["soc"])
        assert got["problem_code"] == exp["protection_bitmask"] and got["temperatures"] == exp["temperatures"]
        assert got["switches"] == {"charge": False, "discharge": True}  # fet_status 2
    first = jbd.decode_basic(one(jbd.build_reply(jbd.REG_BASIC, hexes(e)[0])))
    second = jbd.decode_basic(one(jbd.build_reply(jbd.REG_BASIC, hexes(e)[1])))
    assert first["alarms"] == ["cell_overvoltage"] and second["alarms"] == ["mos_software_lock"]


def test_aiobmsble_fixture_in_protocols() -> None:
    e = entry("aiobmsble JBD fixture")
    basic, cells, version = (one(w) for w in hexes(e))
    got = jbd.decode_basic(basic) | jbd.decode_cells(cells)
    exp = e["expected"]
    assert (got["voltage"], got["current"], got["soc"], got["charge"], got["design_capacity"], got["cycles"]) == (
        exp["voltage"], exp["current"], exp["soc"], exp["capacity_remaining_ah"], exp["design_capacity_ah"],
        exp["cycles"])
    assert got["cell_voltages"] == exp["cell_voltages"] and got["temperatures"] == exp["temperatures"]
    assert jbd.decode_version(version) == exp["hw_version"]


@pytest.mark.parametrize("b", batmon("jbd", "response"), ids=lambda b: b["source_path"].split(":")[-1])
def test_batmon_responses(b: dict) -> None:
    got = jbd.decode_basic(one(bytes.fromhex(b["hex"])))
    exp = b["expected"]
    assert got["voltage"] == exp["voltage"] and got["charge"] == exp["charge"]
    assert got["current"] == (-exp["current"] or 0.0)  # batmon: + = discharge
    assert got["design_capacity"] == exp["capacity"]  # batmon calls the 0x03 nominal capacity "capacity"
    assert got["cycles"] == exp["num_cycles"] and got["temperatures"] == exp["temperatures"]
    assert got["switches"] == exp["switches"] and got["problem_code"] == exp["problem_code"]
    if "soc" in exp:
        # batmon re-derives SoC from charge/capacity (99.8); bmsbus reports the BMS's own RSOC byte (100 %)
        assert got["soc"] == 100 and exp["soc"] == pytest.approx(100 * exp["charge"] / exp["capacity"], abs=0.05)


@pytest.mark.parametrize("e", AIO, ids=lambda e: e["test"].split("::")[-1])
def test_aiobmsble_replays(e: dict) -> None:
    frames, errors = frames_of(hexes(e))
    basics = [f for f in frames if f.kind == jbd.REG_BASIC]
    assert len(basics) >= 1  # duplicate answers are just more frames of the same register
    got = jbd.decode_basic(basics[-1]) | jbd.decode_cells(next(f for f in frames if f.kind == jbd.REG_CELLS))
    exp = e["expected"]
    assert got["voltage"] == exp["voltage"] and got["current"] == exp["current"]  # both + = charging
    assert got["charge"] == exp["cycle_charge"]  # aiobmsble's cycle_charge is the remaining charge
    assert int(got["design_capacity"]) == exp["design_capacity"]  # aiobmsble floors it (62.8 -> 62)
    assert got["cycles"] == exp["cycles"] and got["soc"] == exp["battery_level"]
    assert got["problem_code"] == exp["problem_code"] and got["cell_voltages"] == exp["cell_voltages"]
    assert got["temperatures"] == [t["value"] for t in exp["temp_values"]]
    assert got["switches"] == {"charge": exp["chrg_mosfet"], "discharge": exp["dischrg_mosfet"]}
    if "oversized" in e["test"]:
        assert errors and all(isinstance(err, FramingError) for err in errors)  # trailing zeros are junk
    else:
        assert not errors
    if "secret" in e["test"]:
        assert jbd.auth_result(frames[0]) == (jbd.AUTH_PASSWORD, 0)
        assert e["requests_hex"][0] == jbd.build_auth(e["device"]["secret"]).hex()


# --- framing ------------------------------------------------------------------------------------------

REPLIES = [bytes.fromhex(h) for h in (
    entry("JBD-SP04S034-L4S-200A-B-U, 4S")["frames_hex"] + entry("JBD-DP04S007L4S100A")["frames_hex"]
    + entry("Cell voltages (0x04) response, 4S")["frames_hex"] + ["dde10000000077", "ffaa15010016"])]


@pytest.mark.parametrize("wire", REPLIES, ids=lambda w: w[:4].hex())
def test_chunkings(wire: bytes) -> None:
    assert_chunkings(jbd.JbdAssembler, wire)


@pytest.mark.parametrize("wire", REPLIES[::2], ids=lambda w: w[:4].hex())
def test_prefixes_are_incomplete(wire: bytes) -> None:
    assert_prefixes_incomplete(jbd.JbdAssembler, wire)


GOOD = REPLIES[0]


@pytest.mark.parametrize("data, error", [
    (GOOD[:-3] + bytes((GOOD[-3] ^ 1,)) + GOOD[-2:], ChecksumError),
    (GOOD[:-1] + b"\x78", FramingError),  # terminator
    (b"\xdd\x03\x42\x00", FramingError),  # status byte
    (b"\xff\xaa\x15\x01\x00\x17", ChecksumError),
    (b"\x01\x02\x03", FramingError),
    (b"\xdd\x03\x00\xff" + bytes(2000), FramingError),  # overflow
])
def test_malformed(data: bytes, error: type) -> None:
    assert_rejects(jbd.JbdAssembler, data, error)


def test_error_status_and_unsupported() -> None:
    err = one(jbd.build_reply(jbd.REG_BASIC, status=jbd.STATUS_ERROR))
    with pytest.raises(UnsupportedFrame):
        jbd.decode_basic(err)
    assert jbd.describe(err)["error_status"] is True
    with pytest.raises(UnsupportedFrame):
        jbd.decode_basic(one(jbd.build_reply(jbd.REG_BASIC, bytes(20))))
    with pytest.raises(UnsupportedFrame):
        jbd.decode_cells(one(GOOD))
    with pytest.raises(UsageError):
        jbd.build_auth("")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_codec_errors(data: bytes) -> None:
    assert_garbage_safe(jbd.JbdAssembler, jbd.decode_chunks, data)


# --- emulator round trip --------------------------------------------------------------------------------

@st.composite
def states(draw: st.DrawFn) -> PackState:
    cells = draw(st.integers(1, 32))
    temps = draw(st.integers(0, 8))
    big = draw(st.booleans())  # > 655 Ah needs the 100 mA unit flag
    unit = 10 if big else 100
    return PackState(
        cell_voltages=[v / 1000 for v in draw(st.lists(st.integers(2000, 4300), min_size=cells, max_size=cells))],
        temperatures=[t / 10 for t in draw(st.lists(st.integers(-400, 1000), min_size=temps, max_size=temps))],
        current=draw(st.integers(-32000, 32000)) / unit, soc=float(draw(st.integers(0, 100))),
        charge=draw(st.integers(0, 65535)) / unit, design_capacity=draw(st.integers(66000 if big else 1, 65535 * (
            10 if big else 1))) / 100, cycles=draw(st.integers(0, 65535)),
        balancing=sorted(draw(st.sets(st.integers(0, cells - 1), max_size=5))), alarms=draw(st.integers(0, 0xEFFF)),
        switches={"charge": draw(st.booleans()), "discharge": draw(st.booleans())})


@settings(max_examples=200, deadline=None)
@given(states(), st.binary(max_size=12))
def test_emulator_roundtrip(state: PackState, tail: bytes) -> None:
    emu = JbdEmulator(state, tail=tail)
    (basic,) = emu.receive(jbd.build_request(jbd.REG_BASIC))
    (cells,) = emu.receive(jbd.build_request(jbd.REG_CELLS))
    got = jbd.decode_basic(one(basic)) | jbd.decode_cells(one(cells))
    unit = 0.1 if jbd.unit_100ma(jbd.payload(one(basic))) else 0.01
    assert got["cell_voltages"] == state.cell_voltages
    assert got.get("temperatures", []) == pytest.approx(state.temperatures)
    assert got["current"] == pytest.approx(state.current, abs=unit / 2 + 1e-9)
    assert got["charge"] == pytest.approx(state.charge, abs=unit / 2 + 1e-9)
    assert got["design_capacity"] == pytest.approx(state.design_capacity, abs=unit / 2 + 1e-9)
    assert got["soc"] == state.soc and got["cycles"] == state.cycles and got["balancing"] == state.balancing
    assert got["switches"] == state.switches and got["problem_code"] == state.alarms


# --- driver over the emulator ----------------------------------------------------------------------------

def _opts(**options: object) -> DriverOptions:
    return DriverOptions(request_timeout=0.3, options=dict(options))


@pytest.mark.parametrize("mtu", [20, None])
async def test_driver_reads_and_switches(mtu: int | None) -> None:
    state = make_pack(cells=13, temperature_sensors=3)
    state.current, state.balancing, state.model = -21.37, [4, 12], "JBD-SP13S"
    state.switches = {"charge": True, "discharge": True}
    emu = JbdEmulator(state, duplicate=True, tail=b"\x00\x01\x02")
    async with EmulatedLink(emu, mtu=mtu) as link:
        drv = JbdDriver(link, _opts())
        info = await drv.open()
        assert info.model == "JBD-SP13S" and info.manufacturer == "JBD"
        got = await drv.read()
        assert got["current"] == -21.37 and got["cell_voltages"] == state.cell_voltages
        assert got["balancing"] == [4, 12] and set(got) <= JbdDriver.quantities
        await drv.set_switch("charge", False)
        assert state.switches == {"charge": False, "discharge": True} and emu.lock
        assert (await drv.read())["alarms"] == ["mos_software_lock"]
        await drv.set_switch("discharge", False)  # the charge MOS stays off: we hold it
        assert state.switches == {"charge": False, "discharge": False}
        await drv.set_switch("charge", True)
        assert state.switches == {"charge": True, "discharge": False}
        await drv.set_switch("discharge", True)
        assert state.switches == {"charge": True, "discharge": True} and not emu.lock
        assert (await drv.read())["alarms"] == []
        with pytest.raises(UsageError):
            await drv.set_switch("balance", False)
    writes = [data for marker, reg, data in emu.requests if reg == jbd.REG_MOS]
    assert writes == [b"\x00\x01", b"\x00\x03", b"\x00\x02", b"\x00\x00"]


async def test_driver_does_not_lock_a_protected_mos() -> None:
    """The charge MOS is off because of a protection (no software lock): switching discharge off must
    not software-lock the charge MOS as well (batmon copies the FET state and would)."""
    state = make_pack(cells=4)
    state.switches = {"charge": False, "discharge": True}  # e.g. cell over-voltage protection
    state.alarms = 1  # cell_overvoltage
    emu = JbdEmulator(state)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = JbdDriver(link, _opts())
        await drv.open()
        await drv.read()
        await drv.set_switch("discharge", False)
    assert [data for _, reg, data in emu.requests if reg == jbd.REG_MOS] == [b"\x00\x02"]


async def test_driver_learns_a_lock_from_before_it_connected() -> None:
    state = make_pack(cells=4)
    emu = JbdEmulator(state)
    emu.receive(jbd.build_mos(False, True))  # someone (the app) held the charge MOS off
    async with EmulatedLink(emu, mtu=20) as link:
        drv = JbdDriver(link, _opts())
        await drv.open()
        await drv.set_switch("discharge", False)
    assert (state.switches["charge"], state.switches["discharge"]) == (False, False)


async def test_driver_password() -> None:
    state = make_pack(cells=4)
    async with EmulatedLink(JbdEmulator(state, password="000000"), mtu=20) as link:
        assert (await JbdDriver(link, _opts(password="000000")).open()).manufacturer == "JBD"
    async with EmulatedLink(JbdEmulator(state, password="000000"), mtu=20) as link:
        assert (await JbdDriver(link, _opts(secret="000000")).open()).manufacturer == "JBD"
    async with EmulatedLink(JbdEmulator(state, password="000000"), mtu=20) as link:
        with pytest.raises(UsageError):
            await JbdDriver(link, _opts(password="123456")).open()
    async with EmulatedLink(JbdEmulator(state, password="000000"), mtu=20) as link:
        with pytest.raises(TimeoutError):
            await JbdDriver(link, _opts()).open()


async def test_driver_survives_junk() -> None:
    state = make_pack(cells=8)
    emu = JbdEmulator(state, faults=Faults(junk=1.0), seed=5)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = JbdDriver(link, _opts())
        await drv.open()
        assert (await drv.read())["cell_voltages"] == state.cell_voltages


def test_registry_entry() -> None:
    e = REGISTRY["jbd"]
    assert e.ble is not None and (e.ble.service, e.ble.notify, e.ble.write) == ("ff00", "ff01", "ff02")
    assert e.serial is not None and e.serial.baudrate == 9600 and e.driver is JbdDriver
    assert e.emulator is not None and e.decode is not None
    emu = e.emulator(make_pack(cells=4))
    assert e.decode(emu.receive(jbd.build_request(3)))[0]["voltage"] > 0
