"""JK UART / RS485 0x4E57 codec: vectors, framing, TLV encodings, round trips, garbage, driver."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors_util import batmon, proto

from bmsbus.collector.checksums import sum16
from bmsbus.collector.codec import ChecksumError, CodecError, FramingError, UsageError, drain
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import Faults, PackState, make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.jk import uart
from bmsbus.collector.protocols.jk.driver import JkUartDriver
from bmsbus.collector.protocols.jk.emulator import JkUartEmulator, uart_read_all_frame

PROTO = proto("jk_uart")
BATMON = batmon("jk_uart")


def decode(chunks: list[bytes]) -> list[dict[str, Any]]:
    return uart.decode(chunks)


def _raw_tlv(entry: dict[str, Any], ident: int) -> Any:
    tlv, _ = uart.walk_tlvs(bytes.fromhex("".join(entry["frames_hex"])))
    return tlv[ident]


def test_read_all_request_matches_vectors() -> None:
    assert uart.REQUEST_READ_ALL.hex() == PROTO[0]["frames_hex"][0] == BATMON[0]["hex"]
    assert BATMON[0]["expected"]["meaning"] == "read all registers" and uart.REQUEST_READ_ALL[8] == uart.CMD_READ_ALL
    exp = PROTO[0]["expected"]
    raw = uart.REQUEST_READ_ALL
    assert (int.from_bytes(raw[2:4], "big"), raw[8], raw[9], raw[10], raw[11]) == (
        exp["length_field"], exp["command"], exp["frame_source"], exp["transport_type"], exp["register"])
    assert int.from_bytes(raw[-2:], "big") == exp["checksum"]
    (got,) = decode([raw])
    assert got == {"frame_type": 6, "source": 3, "transport": 0, "request": "00"}


@pytest.mark.parametrize("entry", PROTO[1:], ids=lambda e: e["description"][:50])
def test_read_all_replies(entry: dict[str, Any]) -> None:
    (got,) = decode([bytes.fromhex(h) for h in entry["frames_hex"]])
    assert "error" not in got and "unknown_tlv" not in got
    exp = entry["expected"]
    for key, want in exp.items():
        if key in ("cells", "cell_count_0x8A"):
            assert len(got["cell_voltages"]) == want
        elif key.startswith("cell_voltage_"):
            assert got["cell_voltages"][int(key.rsplit("_", 1)[1]) - 1] == pytest.approx(want)
        elif key == "mosfet_temperature_raw":
            assert got["mos_temperature"] == want == _raw_tlv(entry, 0x80)
        elif key in ("temperature_1_raw", "temperature_2_raw"):
            assert got["temperatures"][int(key[12]) - 1] == want
        elif key == "total_voltage":
            assert got["voltage"] == pytest.approx(want)
        elif key == "current_raw_0x84":
            raw = _raw_tlv(entry, 0x84)
            assert raw == want
            # protocol version 1: bit15 = charging, 10 mA units (protocols.md §2.5)
            assert got["current"] == pytest.approx((raw & 0x7FFF) / 100 * (1 if raw & 0x8000 else -1))
        elif key == "current_A":
            assert got["current"] == pytest.approx(want)
        elif key == "soc":
            assert got["soc"] == want
        elif key == "temperature_sensor_count":
            assert len(got["temperatures"]) == want
        elif key == "cycles":
            assert got["cycles"] == want
        elif key == "warnings_0x8B":
            assert got["problem_code"] == want and got["alarms"] == []
        elif key == "status_0x8C":
            assert _raw_tlv(entry, 0x8C) == want
            assert got["switches"]["balance"] is bool(want & 4)
        elif key == "software_version_0xB7":
            assert got["device"]["extra"]["software_version_raw"] == want
        elif key == "protocol_version_0xC0":
            assert got["device"]["extra"]["protocol_version"] == str(want)
        else:
            raise AssertionError(f"no mapping for {key}")
    assert got["power"] == pytest.approx(got["voltage"] * got["current"], abs=0.01)


def test_reconstructed_capture_decodes_the_discharge_current() -> None:
    (got,) = decode([bytes.fromhex(h) for h in PROTO[2]["frames_hex"]])
    assert got["current"] == pytest.approx(-0.69)  # 0x0045, bit15 clear: discharging


def test_batmon_jk_uart_capture() -> None:
    """batmon's jk_uart returns + = charging (its own sign bug, protocols.md §0.3): no negation here."""
    exp = BATMON[1]["expected"]
    (got,) = decode([bytes.fromhex(BATMON[1]["hex"])])
    assert [round(v * 1000) for v in got["cell_voltages"]] == exp["cell_voltages_mv"]
    assert got["voltage"] == exp["voltage"] and got["current"] == exp["current"]
    assert got["soc"] == exp["soc"] and got["cycles"] == exp["num_cycles"]
    assert got["cycle_charge"] == exp["total_charge_throughput"]
    assert got["capacity"] == exp["capacity"]
    assert got["temperatures"] == exp["temperatures"] and got["mos_temperature"] == exp["mos_temperature"]
    assert got["switches"] == exp["switches"]
    dev = exp["device_info"]
    assert got["device"]["serial"] == dev["device_id"]
    assert got["device"]["extra"]["manufacturing_date"] == dev["production_date"]
    assert got["device"]["extra"]["software_version_raw"] == dev["software_version"]
    assert got["device"]["extra"]["manufacturer_id"] == dev["manufacturer"]
    assert got["device"]["model"] == "JK_B1A20S15P"


@pytest.mark.parametrize(("raw", "celsius"), [(0, 0.0), (25, 25.0), (99, 99.0), (100, 100.0), (101, -1.0),
                                              (120, -20.0), (140, -40.0)])
def test_temperature_encoding(raw: int, celsius: float) -> None:
    assert uart.temperature(raw) == celsius


@pytest.mark.parametrize(("raw", "version", "amps"), [(0x87D0, 1, 20.0), (0x07D0, 1, -20.0), (0, 1, 0.0),
                                                      (11000, 0, -10.0), (9000, 0, 10.0), (0x87D0, 2, None)])
def test_current_encoding(raw: int, version: int, amps: float | None) -> None:
    assert uart.current(raw, version) == amps


REPLY = bytes.fromhex("".join(PROTO[3]["frames_hex"]))


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_prefixes_and_chunkings() -> None:
    for n in range(len(REPLY)):
        asm = uart.JkUartAssembler()
        asm.feed(REPLY[:n])
        assert asm.next_frame() is None
    for chunks in ([REPLY], _split(REPLY, 1), _split(REPLY, 20), [b"\x00\xffjunk\x4e", REPLY],
                   [REPLY + uart.REQUEST_READ_ALL[:5], uart.REQUEST_READ_ALL[5:]]):
        asm = uart.JkUartAssembler()
        frames = [f for c in chunks for f in drain(asm, c) if not isinstance(f, CodecError)]
        assert frames[0].raw == REPLY


def _kinds(data: bytes) -> list[Any]:
    return [type(x) if isinstance(x, CodecError) else x.kind for x in drain(uart.JkUartAssembler(), data)]


def test_malformed_frames_give_exact_errors() -> None:
    bad = REPLY[:-1] + bytes(((REPLY[-1] + 1) & 0xFF,))
    assert _kinds(bad + uart.REQUEST_READ_ALL) == [ChecksumError, 6]
    no_end = bytearray(uart.REQUEST_READ_ALL)
    no_end[-5] = 0x00
    no_end[-2:] = sum16(no_end[:-4]).to_bytes(2, "big")
    assert _kinds(bytes(no_end) + uart.REQUEST_READ_ALL) == [FramingError, 6]
    assert _kinds(b"\x4e\x57\xff\xff" + uart.REQUEST_READ_ALL) == [FramingError, 6]  # absurd LEN
    assert _kinds(b"garbage" + uart.REQUEST_READ_ALL) == [FramingError, 6]
    asm = uart.JkUartAssembler()
    asm.feed(REPLY[:100])
    with pytest.raises(FramingError, match="truncated"):
        asm.finish()


def test_write_frames() -> None:
    frame = uart.build_switch("charge", False)
    assert len(frame) == 22 and frame[:4].hex() == "4e570014" and frame[8:13].hex() == "020200ab00"
    assert frame[-5] == 0x68 and int.from_bytes(frame[-2:], "big") == sum16(frame[:-4])
    with pytest.raises(UsageError):
        uart.build_switch("balance", True)


@st.composite
def uart_states(draw: st.DrawFn) -> tuple[PackState, int]:
    n = draw(st.integers(1, 24))
    return PackState(
        cell_voltages=[draw(st.integers(1000, 4500)) / 1000 for _ in range(n)],
        current=draw(st.integers(-32767, 32767)) / 100, soc=draw(st.integers(0, 100)),
        temperatures=[float(draw(st.integers(-40, 100))) for _ in range(draw(st.integers(0, 2)))],
        mos_temperature=float(draw(st.integers(-40, 100))), cycles=draw(st.integers(0, 65535)),
        cycle_charge=float(draw(st.integers(0, 10**6))), capacity=float(draw(st.integers(1, 2000))),
        design_capacity=float(draw(st.integers(1, 2000))), alarms=draw(st.integers(0, 0x3FFF)),
        uptime=draw(st.integers(0, 10**8)) * 60.0,
        switches={k: draw(st.booleans()) for k in ("charge", "discharge", "balance")},
    ), draw(st.sampled_from([0, 1]))


@settings(max_examples=200, deadline=None)
@given(uart_states())
def test_round_trip(case: tuple[PackState, int]) -> None:
    state, version = case
    if version == 0:
        state.current = max(-100.0, min(100.0, state.current))
    (got,) = decode(_split(uart_read_all_frame(state, version, 7), 33))
    assert got["cell_voltages"] == pytest.approx(state.cell_voltages)
    assert got["voltage"] == pytest.approx(sum(state.cell_voltages), abs=0.0051)  # 10 mV units
    assert got["current"] == pytest.approx(state.current)
    assert got["temperatures"] == state.temperatures and got["mos_temperature"] == state.mos_temperature
    assert (got["soc"], got["cycles"], got["cycle_charge"]) == (state.soc, state.cycles, state.cycle_charge)
    assert (got["capacity"], got["design_capacity"]) == (state.capacity, state.design_capacity)
    assert got["problem_code"] == state.alarms and len(got["alarms"]) == bin(state.alarms).count("1")
    assert got["switches"] == state.switches and got["uptime"] == state.uptime


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_garbage_never_escapes(chunks: list[bytes]) -> None:
    decode(chunks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(11, len(REPLY) - 10), st.integers(0, 255)), min_size=1, max_size=10))
def test_mutated_replies_decode_or_codec_error(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(REPLY)
    for pos, val in edits:
        raw[pos] = val
    raw[-2:] = sum16(raw[:-4]).to_bytes(2, "big")
    for g in decode([bytes(raw)]):
        json.dumps(g, allow_nan=False)


async def test_driver_over_emulator_reads_and_writes() -> None:
    state = make_pack(cells=14, temperature_sensors=2, seed=2)
    emu = REGISTRY["jk_uart"].emulator(state)  # type: ignore[misc]
    assert isinstance(emu, JkUartEmulator)
    async with EmulatedLink(emu, mtu=64) as link:
        drv = JkUartDriver(link, DriverOptions(request_timeout=1.0))
        info = await drv.open()
        assert info.sw_version and info.serial == state.serial[:8]
        r = await drv.read()
        assert r["cell_voltages"] == pytest.approx(state.cell_voltages)
        assert r["soc"] == round(state.soc)
        for name in ("charge", "discharge"):
            await drv.set_switch(name, False)
            assert state.switches[name] is False
            assert (await drv.read())["switches"][name] is False
        with pytest.raises(UsageError):
            await drv.set_switch("balance", False)


async def test_driver_copes_with_corrupt_and_junk_replies() -> None:
    state = make_pack(cells=8)
    emu = JkUartEmulator(state, faults=Faults(junk=0.5))
    async with EmulatedLink(emu, mtu=32) as link:
        drv = JkUartDriver(link, DriverOptions(request_timeout=1.0))
        for _ in range(4):
            assert (await drv.read())["cell_voltages"] == pytest.approx(state.cell_voltages)
