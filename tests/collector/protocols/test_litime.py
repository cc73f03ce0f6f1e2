"""LiTime / Redodo codec: vectors (aiobmsble redodo, batmon litime), the 00 00 00 00 trap, round trips, driver."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from partb_util import (
    aio,
    approx_reading,
    batmon,
    check_chunkings,
    check_prefixes,
    chunks_of,
    expect_error,
    frames,
    garbage,
    quantized_state,
    read_over_link,
    record_writes,
)

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.litime import codec
from bmsbus.collector.protocols.litime.driver import LiTimeDriver
from bmsbus.collector.protocols.litime.emulator import LiTimeEmulator

AIO = aio("redodo_bms")
FULL = [e for e in AIO if len(e["frames_hex"][0]) == 2 * codec.STATUS_LEN]


def decode_one(chunks: list[bytes]) -> dict:
    (frame,), errors = frames(codec.LiTimeAssembler(), chunks)
    assert not errors
    return codec.decode_status(frame)


@pytest.mark.parametrize("entry", FULL, ids=lambda e: e["test"].split("::")[-1])
def test_aiobmsble_vectors(entry: dict) -> None:
    """aiobmsble (+ = charging). Its temp_values are sensors at 52, 54, 56...: we report 52 as the cell sensor
    and 54 as MOS ([batmon]); its design_capacity (u32 at 64) is our `capacity`; cycle_charge = remaining Ah."""
    r = decode_one(chunks_of(entry))
    want = entry["expected"]
    approx_reading(r, {
        "voltage": want["voltage"], "current": want["current"], "soc": want["battery_level"],
        "soh": want["battery_health"], "charge": want["cycle_charge"], "cycles": want["cycles"],
        "cell_voltages": want["cell_voltages"], "problem_code": want["problem_code"],
    })
    assert r["capacity"] == want["design_capacity"]
    temps = [t["value"] for t in want["temp_values"]]
    assert r["temperatures"] == temps[:1]
    if len(temps) > 1:
        assert r["mos_temperature"] == temps[1]
    assert r["switches"] == {"heater": want["heater"]}


def test_batmon_vectors() -> None:
    """batmon: + = discharge, so its current 1.435 is -1.435 here."""
    (req,) = batmon("litime", "request")
    assert req["expected"] == {"meaning": "status poll (fixed)"}
    wire = bytes.fromhex(req["hex"])
    assert wire == codec.build_frame(codec.KIND_REQUEST, b"") == codec.REQUEST  # the builder, byte for byte
    (frame,), errors = frames(codec.LiTimeAssembler(), [wire])
    assert not errors and frame.kind == codec.KIND_REQUEST == codec.KIND_STATUS & 0x7F
    assert codec.decode_frame(frame) == {"frame_type": codec.KIND_REQUEST, "request": True}
    (resp,) = batmon("litime", "response")
    r = decode_one([bytes.fromhex(resp["hex"])])
    want = resp["expected"]
    assert r["voltage"] == want["voltage"] and r["current"] == -want["current"]
    assert (r["charge"], r["capacity"], r["cycles"]) == (want["charge"], want["capacity"], want["num_cycles"])
    assert r["cycle_charge"] == want["total_charge_throughput"]
    assert r["temperatures"] == want["temperatures"] and r["mos_temperature"] == want["mos_temperature"]
    assert r["cell_voltages"] == [mv / 1000 for mv in want["cell_voltages_mv"]]


def test_the_four_zero_bytes_trap() -> None:
    """`00 00 00 00` passes a sum8 and a naive length check; it must never become a frame."""
    (entry,) = [e for e in AIO if "short_frame" in e["test"]]
    got, errors = frames(codec.LiTimeAssembler(), chunks_of(entry))
    assert not got and errors and all(type(e) is FramingError for e in errors)
    assert all("error" in d for d in codec.decode(chunks_of(entry)))
    got, _ = frames(codec.LiTimeAssembler(), [bytes(400)])
    assert not got


def test_short_status_reply_is_rejected_by_bounds() -> None:
    short = codec.build_frame(codec.KIND_STATUS, bytes(20))
    (frame,), _ = frames(codec.LiTimeAssembler(), [short])
    with pytest.raises(FramingError):
        codec.decode_status(frame)
    (req,), _ = frames(codec.LiTimeAssembler(), [codec.REQUEST])
    with pytest.raises(UnsupportedFrame):
        codec.decode_status(req)


def test_chunkings_and_prefixes() -> None:
    wire = b"".join(chunks_of(FULL[0]))
    check_chunkings(codec.LiTimeAssembler, wire)
    check_prefixes(codec.LiTimeAssembler, wire)
    check_prefixes(codec.LiTimeAssembler, codec.REQUEST)


STATUS = b"".join(chunks_of(FULL[0]))


@pytest.mark.parametrize(("data", "error", "then"), [
    (STATUS[:-1] + bytes(((STATUS[-1] + 1) & 0xFF,)), ChecksumError, 0),
    (b"\x05\x06" + STATUS, FramingError, 1),
    (b"\x00\x00\x02\x00\x00\x00", FramingError, 0),
], ids=["sum8", "junk", "length"])
def test_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(codec.LiTimeAssembler, data, error, then)


states = st.builds(
    lambda cells, cur, temp, mos, soc, soh, cycles, charge, cap, thr, alarms, heater: quantized_state(
        cells, cur, [temp], soc, soh=float(soh), mos_temperature=float(mos), cycles=cycles, charge=charge / 100,
        capacity=cap / 100, cycle_charge=float(thr), alarms=alarms, switches={"heater": heater}),
    st.lists(st.integers(1, 4000), min_size=1, max_size=16), st.integers(-2_000_000, 2_000_000),
    st.integers(-40, 100), st.integers(-40, 120), st.integers(0, 100), st.integers(0, 100), st.integers(0, 10**6),
    st.integers(0, 0xFFFF), st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 2**64 - 1), st.booleans())


@settings(max_examples=200, deadline=None)
@given(states)
def test_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    r = decode_one(LiTimeEmulator(state).receive(codec.REQUEST))
    assert r["cell_voltages"] == state.cell_voltages
    assert r["voltage"] == pytest.approx(round(state.voltage * 1000) / 1000)
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert r["temperatures"] == [int(state.temperatures[0])] and r["mos_temperature"] == state.mos_temperature
    assert (r["soc"], r["soh"], r["cycles"]) == (state.soc, state.soh, state.cycles)
    assert r["cycle_charge"] == state.cycle_charge
    assert r["charge"] == pytest.approx(state.charge) and r["capacity"] == pytest.approx(state.capacity)
    assert r["problem_code"] == state.alarms and r["switches"] == state.switches


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(codec.LiTimeAssembler, data, seed)
    garbage(codec.LiTimeAssembler, b"\x00\x00" + data, seed)
    REGISTRY["litime"].decode([data])  # type: ignore[misc]


async def test_driver_over_emulated_link() -> None:
    state = quantized_state([3317, 3319, 3324, 3323], 1500, [18], 88, charge=88.0, capacity=100.0, cycles=4)
    info, (r,) = await read_over_link(LiTimeDriver, LiTimeEmulator(state))
    assert info.manufacturer
    assert r["cell_voltages"] == state.cell_voltages and r["current"] == 15.0 and r["soc"] == 88
    assert r["voltage"] == pytest.approx(13.283)


async def test_driver_sends_the_captured_poll() -> None:
    """Every read writes exactly batmon's status poll (one write per read) and gets the 105-byte status reply."""
    (req,) = batmon("litime", "request")
    assert req["expected"]["meaning"] == "status poll (fixed)"
    emu = record_writes(LiTimeEmulator(quantized_state([3300, 3301, 3302, 3303], 0, [20], 50)))
    _, readings = await read_over_link(LiTimeDriver, emu, mtu=None, reads=2)
    assert emu.received == [bytes.fromhex(req["hex"])] * 2 and len(readings) == 2
