"""Daly D2 Modbus protocol (`daly2`): vectors, p81 rejection, framing, round trips, garbage, driver."""

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
from bmsbus.collector.emulation.base import PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY, modbus_rtu
from bmsbus.collector.protocols.daly import d2
from bmsbus.collector.protocols.daly.alarms import ALARM_CODES
from bmsbus.collector.protocols.daly.driver import DalyD2Driver
from bmsbus.collector.protocols.daly.emulator import DalyD2Emulator

PROTO = proto("daly_ble_modbus")
P81 = proto("daly_ble_p81")
AIO = aio("daly_bms")


def frames_of(chunks: list[bytes]) -> list[Frame]:
    frames, errors = split_frames(d2.new_assembler(), chunks)
    assert not errors, errors
    return frames


def one(wire: bytes) -> Frame:
    (frame,) = frames_of([wire])
    return frame


def entry(text: str, nth: int = 0) -> dict:
    return [e for e in PROTO if text in e["description"]][nth]


# --- vectors ------------------------------------------------------------------------------------------

def test_requests_match_builders() -> None:
    e = entry("Requests: read 62 status")
    assert hexes(e) == [d2.read_request(start, count) for start, count in e["expected"]["requests"]]
    assert hexes(e)[0] == d2.status_request()
    for b in batmon("daly2", "request"):
        exp = b["expected"]
        wire = bytes.fromhex(b["hex"])
        if "switch" in exp:
            assert wire == d2.switch_request(exp["switch"], exp["state"])
            assert d2.SWITCH_REGISTERS[exp["switch"]] == exp["register"]
        else:
            assert wire == d2.read_request(exp["start"], exp["count"])


def test_status_62_aiobmsble_fixture() -> None:
    e = entry("Status frame, 62 registers")
    got = d2.decode_status(one(hexes(e)[0]))
    exp = e["expected"]
    assert got["voltage"] == exp["voltage"] and got["current"] == exp["current"] and got["soc"] == exp["soc"]
    assert got["cycles"] == exp["cycles"] and got["charge"] == exp["capacity_remaining_ah"]
    assert got["cell_voltages"] == exp["cell_voltages"] and got["temperatures"] == exp["temperatures"]
    assert got["switches"] == {"charge": exp["charging_mosfet"], "discharge": exp["discharging_mosfet"]}
    assert got["problem_code"] == exp["problem_code"] and got["alarms"] == []
    assert got["power"] == 42.0  # reg 0x39, signed like the (charging) current
    assert "balancing" not in got and "mos_temperature" not in got  # 62-register block: not in it
    described = d2.describe(one(hexes(e)[0]))
    assert described["delta_cell_voltage"] == exp["delta_voltage"] and described["balancer_name"] == "passive"


@pytest.mark.parametrize("nth", [0, 1])
def test_status_80_syssi_fixtures(nth: int) -> None:
    e = entry("Status frame 80 registers", nth)
    got = d2.decode_status(one(hexes(e)[0]))
    exp = e["expected"]
    assert len(got["cell_voltages"]) == exp["cells"] and got["cell_voltages"][0] == exp["cell_voltage_1"]
    assert got["temperatures"] == [exp["temperatures_degC"]] * exp["temp_sensors"]
    assert got["voltage"] == exp["total_voltage"] and got["soc"] == exp["soc"] and got["cycles"] == exp["cycles"]
    assert got["charge"] == exp["capacity_remaining_ah"]
    assert got["switches"] == {"charge": exp["charging"], "discharge": exp["discharging"]}
    assert got["balancing"] == [] and got["balance_current"] == exp["balance_current"]
    assert got["mos_temperature"] == exp["mosfet_temperature"]
    assert d2.describe(one(hexes(e)[0]))["status_name"] == "discharging"
    # Appendix B: frame #1's +0.7 A is copied from a source comment; reg 0x29 = 0x7517 is -2.5 A, which
    # the status "discharging" and the PDU-file entry with the same bytes confirm.
    assert got["current"] == (-2.5 if nth == 0 else exp["current"])
    assert got["power"] < 0


@pytest.mark.parametrize("nth", [0, 1, 2])
def test_user_report_frames_and_sign(nth: int) -> None:
    e = entry("from user report", nth)
    frame = one(hexes(e)[0])
    got = d2.decode_status(frame)
    exp = e["expected"]
    assert (len(got["cell_voltages"]), got["voltage"], got["current"], got["soc"]) == (
        exp["cells"], exp["total_voltage"], exp["current"], exp["soc"])
    status = d2.describe(frame)["status"]
    assert status == exp["charge_discharge_status"]
    # §5.2: raw > 30000 = charging, so "discharging" frames decode negative
    assert status != 2 or got["current"] < 0


@pytest.mark.parametrize("nth, alarm, bit", [(0, "cell_overvoltage_warning", 48), (1, "afe_fault", 24)])
def test_alarm_frames(nth: int, alarm: str, bit: int) -> None:
    got = d2.decode_status(one(hexes(entry("one alarm bit set", nth))[0]))
    assert got["alarms"] == [alarm] and got["problem_code"] == 1 << bit


def test_extension_version_settings_password_switch() -> None:
    ext = d2.decode_extension(one(hexes(entry("MOS-temperature block"))[0]))
    assert ext == {"balancing": [], "balance_current": 0.0, "mos_temperature": 38.0}
    info = d2.decode_version(one(hexes(entry("Version block"))[0]))
    assert (info.sw_version, info.hw_version, info.extra) == ("T00K_321042_11", "H2.0_103R_309F9F",
                                                              {"production_date": "20240229"})
    for nth, (sw, hw) in enumerate([("401012", "BMS"), ("204012", "SH39F003")]):
        info = d2.decode_version(one(hexes(entry("D2 protocol: Version frame", nth))[0]))
        assert (info.sw_version, info.hw_version) == (sw, hw)
    settings_block = d2.describe(one(hexes(entry("Settings frame"))[0]))
    assert settings_block["design_capacity"] == 105.0 and settings_block["soc_setting"] == 68.0
    assert settings_block["switches"] == {"charge": True, "discharge": True}
    assert d2.describe(one(hexes(entry("Password frame"))[0]))["password"] == "123456"
    assert d2.register_value(one(hexes(entry("= ON"))[0])) == 1
    assert d2.register_value(one(hexes(entry("= OFF"))[0])) == 0


def test_batmon_response() -> None:
    (b,) = batmon("daly2", "response")
    got = d2.decode_status(one(bytes.fromhex(b["hex"])))
    exp = b["expected"]
    # batmon passes the D2 current through although its convention is + = discharge (protocols.md §0.3:
    # a batmon bug). The wire value (raw 30030) is +3.0 A *charging* (aiobmsble agrees: battery_charging),
    # so bmsbus reports +3.0, not batmon's converted -3.0.
    assert got["current"] == exp["current"] == 3.0
    assert got["voltage"] == exp["voltage"] and got["soc"] == exp["soc"] and got["charge"] == exp["charge"]
    assert got["cycles"] == exp["num_cycles"] and got["switches"] == exp["switches"]
    assert [round(v * 1000) for v in got["cell_voltages"]] == exp["cell_voltages"]
    assert got["temperatures"] == exp["temperatures"] and got["problem_code"] == exp["problem_code"]


def _aio_decode(e: dict) -> dict:
    """Replay an aiobmsble test: status frames give the values, a 0x3E block MOS temperature."""
    reading: dict = {}
    for frame in frames_of(hexes(e)):
        data = modbus_rtu.registers(frame)
        if len(data) == 2 * d2.EXTENSION_COUNT:
            reading.update(d2.decode_extension(frame, len(reading.get("cell_voltages", ()))))
        else:
            reading.update(d2.decode_status(frame))
    return reading


@pytest.mark.parametrize("e", [e for e in AIO if e["frames_hex"][0].startswith("d2")], ids=lambda e: e["test"])
def test_aiobmsble_replays(e: dict) -> None:
    got = _aio_decode(e)
    exp = e["expected"]
    assert got["voltage"] == exp["voltage"] and got["current"] == exp["current"]  # both + = charging
    assert got["soc"] == exp["battery_level"] and got["charge"] == exp["cycle_charge"]
    assert got["cycles"] == exp["cycles"] and got["power"] == exp["power"]
    assert len(got["cell_voltages"]) == exp["cell_count"] and got["cell_voltages"] == exp["cell_voltages"]
    assert got["switches"] == {"charge": exp["chrg_mosfet"], "discharge": exp["dischrg_mosfet"]}
    assert got["problem_code"] == exp["problem_code"]
    generic = [t["value"] for t in exp["temp_values"] if t["type"] == "GENERIC"]
    mos = [t["value"] for t in exp["temp_values"] if t["type"] == "MOSFET"]
    assert got["temperatures"] == generic
    assert got.get("mos_temperature") == (mos[0] if mos else None)


def test_p81_is_rejected_cleanly() -> None:
    """p81 (ESS-DL-BMS, requests 0x81 / replies 0x51) is not supported: its replies frame fine but every
    decode says so with UnsupportedFrame; nothing else escapes."""
    (e,) = P81
    rx = [bytes.fromhex(h) for h, d in zip(e["frames_hex"], e["direction"], strict=True) if d == "rx"]
    for wire in rx:
        frame = one(wire)
        assert frame.address == d2.P81_REPLY
        with pytest.raises(UnsupportedFrame, match="p81"):
            d2.describe(frame)
    out = d2.decode_chunks(hexes(e))
    rejected = [d for d in out if "p81" in d.get("error", "")]
    assert len(rejected) == len(rx) and all("error" in d for d in out)
    (aio_p81,) = [a for a in AIO if a["frames_hex"][-1].startswith("51")]
    assert all("error" in d for d in d2.decode_chunks(hexes(aio_p81)))


# --- framing ------------------------------------------------------------------------------------------

REPLIES = [h for e in PROTO[1:] for h in e["frames_hex"]]


@pytest.mark.parametrize("wire", REPLIES[:6] + [REPLIES[-1]], ids=lambda h: h[:10] + str(len(h)))
def test_chunkings(wire: str) -> None:
    assert_chunkings(d2.new_assembler, bytes.fromhex(wire))


def test_prefixes_are_incomplete() -> None:
    assert_prefixes_incomplete(d2.new_assembler, bytes.fromhex(REPLIES[0]))


GOOD = bytes.fromhex(entry("= ON")["frames_hex"][0])


@pytest.mark.parametrize("data, error", [
    (GOOD[:-1] + bytes((GOOD[-1] ^ 0x40,)), ChecksumError),
    (b"\xd2\x2b\x00\x00", FramingError),  # unknown function
    (b"\x01\x02\x03", FramingError),  # not our address
    (b"\xd2" * 3000, FramingError),  # overflow
])
def test_malformed(data: bytes, error: type) -> None:
    assert_rejects(d2.new_assembler, data, error)


def test_exception_reply_and_write_echo() -> None:
    exc = one(modbus_rtu.exception_reply(d2.ADDRESS, 3, 2))
    assert modbus_rtu.exception_code(exc) == 2
    with pytest.raises(UnsupportedFrame):
        d2.decode_status(exc)
    assert "error" in d2.decode_chunks([modbus_rtu.exception_reply(d2.ADDRESS, 3, 2)])[0]
    echo = one(d2.switch_request("discharge", False))  # the echo is the request
    assert d2.write_echo(echo) == (d2.REG_DISCHARGE_MOS, 0)
    with pytest.raises(UsageError):
        d2.switch_request("heater", True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_codec_errors(data: bytes) -> None:
    assert_garbage_safe(d2.new_assembler, d2.decode_chunks, data)


# --- emulator round trip --------------------------------------------------------------------------------

@st.composite
def states(draw: st.DrawFn) -> PackState:
    cells = draw(st.integers(1, 32))
    temps = draw(st.integers(0, 8))
    return PackState(
        cell_voltages=[v / 1000 for v in draw(st.lists(st.integers(2000, 4300), min_size=cells, max_size=cells))],
        temperatures=[float(t) for t in draw(st.lists(st.integers(-40, 100), min_size=temps, max_size=temps))],
        current=draw(st.integers(-3000, 3000)) / 10, soc=draw(st.integers(0, 1000)) / 10,
        charge=draw(st.integers(0, 6000)) / 10, cycles=draw(st.integers(0, 65535)),
        mos_temperature=float(draw(st.integers(-39, 120))), balance_current=draw(st.integers(-500, 500)) / 1000,
        balancing=sorted(draw(st.sets(st.integers(0, cells - 1), max_size=5))), alarms=draw(st.integers(0, 2**64 - 1)),
        switches={"charge": draw(st.booleans()), "discharge": draw(st.booleans()), "balance": draw(st.booleans())})


@settings(max_examples=200, deadline=None)
@given(states(), st.booleans())
def test_emulator_roundtrip(state: PackState, long_status: bool) -> None:
    emu = DalyD2Emulator(state, long_status=long_status)
    count = d2.STATUS_REGISTERS_LONG if long_status else d2.STATUS_REGISTERS
    got = d2.decode_status(one(emu.receive(d2.status_request(count))[0]))
    if not long_status:
        got.update(d2.decode_extension(one(emu.receive(d2.read_request(d2.EXTENSION_START, 9))[0]),
                                       len(state.cell_voltages)))
    assert got["cell_voltages"] == state.cell_voltages
    assert got.get("temperatures", []) == state.temperatures
    assert got["voltage"] == pytest.approx(round(state.voltage * 10) / 10)
    assert got["current"] == pytest.approx(state.current) and got["soc"] == pytest.approx(state.soc)
    assert got["charge"] == pytest.approx(state.charge) and got["cycles"] == state.cycles
    assert got["switches"] == {"charge": state.switches["charge"], "discharge": state.switches["discharge"]}
    assert got["problem_code"] == state.alarms and set(got["alarms"]) <= ALARM_CODES
    assert got["balancing"] == state.balancing
    assert got["balance_current"] == pytest.approx(state.balance_current)
    assert got["mos_temperature"] == state.mos_temperature
    assert abs(got["power"]) == round(abs(state.voltage * state.current))
    if long_status is False:
        assert modbus_rtu.exception_code(one(emu.receive(d2.status_request(80))[0])) == 2


# --- driver over the emulator ----------------------------------------------------------------------------

def _opts(**options: object) -> DriverOptions:
    return DriverOptions(request_timeout=0.3, options=dict(options))


@pytest.mark.parametrize("long_status, extension", [(True, True), (False, True), (False, False)])
async def test_driver_reads_and_switches(long_status: bool, extension: bool) -> None:
    state = make_pack(cells=16, temperature_sensors=4)
    state.current, state.balancing, state.cycles, state.mos_temperature = 12.3, [3, 9], 7, 41.0
    state.sw_version, state.hw_version, state.model = "401012", "H2.0", "20240229"
    emu = DalyD2Emulator(state, long_status=long_status, extension=extension)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = DalyD2Driver(link, _opts())
        info = await drv.open()
        assert (info.sw_version, info.hw_version, info.extra["production_date"]) == ("401012", "H2.0", "20240229")
        assert drv.status_registers == (80 if long_status else 62)
        got = await drv.read()
        assert got["current"] == pytest.approx(12.3) and got["cell_voltages"] == state.cell_voltages
        assert got["design_capacity"] == 100.0 and got["switches"]["balance"] is True
        assert ("mos_temperature" in got) == extension and got.get("balancing", [3, 9]) == [3, 9]
        assert set(got) <= DalyD2Driver.quantities
        for name in ("charge", "discharge", "balance"):
            await drv.set_switch(name, False)
            assert state.switches[name] is False
            assert (await drv.read())["switches"][name] is False
        await drv.set_switch("charge", True)
        assert (await drv.read())["switches"]["charge"] is True
    sent = {(r.function, r.register) for r in emu.requests}
    assert {(6, 0xA5), (6, 0xA6), (6, 0xCF), (3, 0xA9), (3, 0x80)} <= sent


async def test_driver_without_balancer_switch() -> None:
    state = make_pack(cells=4)
    state.current = -2.0
    emu = DalyD2Emulator(state, balancer_switch=False)
    async with EmulatedLink(emu, mtu=20) as link:
        drv = DalyD2Driver(link, _opts(status_registers=80))
        await drv.open()
        assert drv.writable_switches() == ("charge", "discharge")
        got = await drv.read()
        assert got["current"] == -2.0 and got["power"] < 0 and "balance" not in got["switches"]
        with pytest.raises(UsageError):
            await drv.set_switch("balance", True)
    with pytest.raises(UsageError):
        DalyD2Driver(link, _opts(status_registers=70))


def test_registry_entry() -> None:
    e = REGISTRY["daly2"]
    assert e.ble is not None and e.ble.service == "fff0" and e.driver is DalyD2Driver
    assert e.emulator is not None and e.decode is not None
    emu = e.emulator(make_pack(cells=4))
    assert e.decode(emu.receive(d2.status_request()))[0]["block"] == "status_62"
