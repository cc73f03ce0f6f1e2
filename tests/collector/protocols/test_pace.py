"""PACE ASCII codec: batmon/nkinnan vectors, CR framing, LCHKSUM and CHKSUM, status sign, round trips, driver."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from partb_util import (
    batmon,
    check_chunkings,
    check_prefixes,
    expect_error,
    frames,
    garbage,
    quantized_state,
    read_over_link,
)

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.pace import codec
from bmsbus.collector.protocols.pace.driver import PaceDriver
from bmsbus.collector.protocols.pace.emulator import PaceEmulator

ANALOG_REQ, ANALOG_RESP, STATUS_REQ, STATUS_RESP = batmon("pace_uart")
ANALOG = bytes.fromhex(ANALOG_RESP["hex"])
STATUS = bytes.fromhex(STATUS_RESP["hex"])


def one(wire: bytes):  # type: ignore[no-untyped-def]
    (frame,), errors = frames(codec.PaceAssembler(), [wire])
    assert not errors
    return frame


def test_requests() -> None:
    for entry, req in ((ANALOG_REQ, codec.REQUEST_ANALOG), (STATUS_REQ, codec.REQUEST_STATUS)):
        assert req == bytes.fromhex(entry["hex"]) == entry["expected"]["ascii"].encode()
        assert one(req).kind == entry["expected"]["cid2"]


def test_analog_vector() -> None:
    """batmon's temps_c lists all six sensors: 0-3 pack, 4 MOS, 5 environment (no pack key)."""
    r, w = codec.decode_analog(one(ANALOG)), ANALOG_RESP["expected"]
    assert len(r["cell_voltages"]) == w["cells"] and round(r["cell_voltages"][0] * 1000) == w["cell0_mv"]
    assert r["temperatures"] == w["temps_c"][:4] and r["mos_temperature"] == w["temps_c"][4]
    assert r["current"] == w["current_a_raw_sign"]  # wire s16; the status flags decide the sign
    assert (r["voltage"], r["charge"], r["capacity"], r["design_capacity"], r["cycles"]) == (
        w["total_v"], w["remaining_ah"], w["full_ah"], w["design_ah"], w["cycles"])
    assert r["soc"] == pytest.approx(100 * w["remaining_ah"] / w["full_ah"], abs=0.05)


def test_status_vector_and_sign() -> None:
    s = codec.decode_status(one(STATUS))
    assert s["problem_code"] == STATUS_RESP["expected"]["problem_code"] == 0
    assert s["system"] == 0x0E and s["switches"] == {"charge": True, "discharge": True}
    assert codec.apply_status_sign(-2.25, s["system"]) == -2.25  # discharging flag agrees with the wire
    assert codec.apply_status_sign(2.25, codec.SYS_DISCHARGING) == -2.25
    assert codec.apply_status_sign(-2.25, codec.SYS_CHARGING) == 2.25
    assert codec.apply_status_sign(-2.25, 0) == -2.25


def test_decode_tells_analog_from_status() -> None:
    assert [d["reply"] for d in codec.decode([ANALOG, STATUS])] == ["analog", "status"]


def test_chunkings_and_prefixes() -> None:
    for wire in (ANALOG, STATUS, codec.REQUEST_ANALOG):
        check_chunkings(codec.PaceAssembler, wire)
        check_prefixes(codec.PaceAssembler, wire)


def _with_length(wire: bytes, length: str) -> bytes:
    body = wire[1:9] + length.encode() + wire[13:-5]
    return b"~" + body + f"{codec.frame_checksum(body):04X}".encode() + b"\r"


@pytest.mark.parametrize(("data", "error", "then"), [
    (ANALOG[:-5] + b"0000\r", ChecksumError, 0),
    (_with_length(ANALOG, "007A"), FramingError, 0),  # LCHKSUM nibble wrong
    (_with_length(ANALOG, "E07C"), FramingError, 0),  # LENID does not match INFO (LCHKSUM right)
    (ANALOG[:40] + b"\r", FramingError, 0),
    (ANALOG[:30] + ANALOG, FramingError, 1),  # cut short by a new `~`
    (b"\n\n" + ANALOG, FramingError, 1),  # a line reader's LF is junk here
    (ANALOG[:20] + b"x" + ANALOG[21:], FramingError, 0),
], ids=["chksum", "lchksum", "lenid", "short", "cut", "lf", "non-hex"])
def test_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(codec.PaceAssembler, data, error, then)


def test_length_field() -> None:
    assert codec.length_field(2) == 0xE002 and codec.length_field(0x7A) == 0xF07A and codec.length_field(0x4C) == 0x004C


def test_error_return_code_and_short_info() -> None:
    err = one(codec.build_frame(0x04, b""))
    assert codec.decode_frame(err)["return_code"] == 4
    with pytest.raises(UnsupportedFrame):
        codec.decode_analog(err)
    with pytest.raises(FramingError):
        codec.decode_analog(one(codec.build_frame(0x00, bytes((0, 1, 16)) + bytes(10))))


states = st.builds(
    lambda cells, cur, temps, mos, charge, cap, design, cycles, bal, alarms, sw: quantized_state(
        cells, cur, temps, 0, mos_temperature=mos / 10, charge=charge / 100, capacity=cap / 100,
        design_capacity=design / 100, cycles=cycles, balancing=sorted(i for i in bal if i < min(16, len(cells))),
        alarms=alarms, switches={"charge": sw[0], "discharge": sw[1]}),
    st.lists(st.integers(1, 4000), min_size=1, max_size=16), st.integers(-32000, 32000),
    st.lists(st.integers(-40, 90).map(float), min_size=4, max_size=4), st.integers(-400, 900),
    st.integers(0, 0xFFFF), st.integers(1, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.sets(st.integers(0, 15)), st.integers(0, 0xFF7FFF).map(lambda a: a & 0xFF7FFF),
    st.tuples(st.booleans(), st.booleans()))


@settings(max_examples=200, deadline=None)
@given(states)
def test_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    e = PaceEmulator(state)
    a = codec.decode_analog(one(e.receive(codec.REQUEST_ANALOG)[0]))
    s = codec.decode_status(one(e.receive(codec.REQUEST_STATUS)[0]))
    assert a["cell_voltages"] == state.cell_voltages
    assert codec.apply_status_sign(a["current"], s["system"]) == pytest.approx(state.current, abs=1e-9)
    assert a["temperatures"] == state.temperatures and a["mos_temperature"] == pytest.approx(state.mos_temperature)
    assert (a["charge"], a["capacity"], a["design_capacity"], a["cycles"]) == pytest.approx(
        (state.charge, state.capacity, state.design_capacity, state.cycles))
    assert s["balancing"] == state.balancing and s["switches"] == state.switches
    assert s["problem_code"] == state.alarms


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(codec.PaceAssembler, data, seed)
    garbage(codec.PaceAssembler, b"~" + data.hex().upper().encode()[:400] + b"\r", seed)
    REGISTRY["pace_uart"].decode([data])  # type: ignore[misc]


async def test_driver_over_emulated_link() -> None:
    state = quantized_state([3271, 3272, 3271, 3269], -225, [24.1, 23.9, 23.9, 23.9], 0, mos_temperature=26.5,
                            charge=48.19, capacity=103.46, design_capacity=100.0, cycles=140, balancing=[2])
    info, (r,) = await read_over_link(PaceDriver, PaceEmulator(state), mtu=None)
    assert info.manufacturer == "PACE"
    assert r["current"] == -2.25 and r["cell_voltages"] == state.cell_voltages and r["balancing"] == [2]
    assert r["soc"] == pytest.approx(46.6) and r["switches"] == {"charge": True, "discharge": True}


async def test_driver_talks_to_its_address_only() -> None:
    state = quantized_state([3300] * 4, 0, [20.0] * 4, 0)
    _, (r,) = await read_over_link(PaceDriver, PaceEmulator(state, address=3), {"address": 3}, mtu=7)
    assert r["cell_voltages"] == state.cell_voltages
    with pytest.raises(TimeoutError):
        await read_over_link(PaceDriver, PaceEmulator(state, address=3), mtu=None, timeout=0.3)
