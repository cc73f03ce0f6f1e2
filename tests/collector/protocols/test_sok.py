"""SOK / ABC codec: aiobmsble vectors, CRC-8 framing, round trips, garbage, driver over an emulator."""

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
)

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.sok import codec
from bmsbus.collector.protocols.sok.driver import SokDriver
from bmsbus.collector.protocols.sok.emulator import SokEmulator

AIO = aio("abc_bms")


@pytest.mark.parametrize("entry", AIO, ids=lambda e: e["test"].split("::")[-1])
def test_aiobmsble_vectors(entry: dict) -> None:
    """aiobmsble (+ = charging): its cycle_charge is the remaining Ah (our `charge`)."""
    got_frames, errors = frames(codec.SokAssembler(), chunks_of(entry))
    assert not errors
    r = codec.combine(got_frames)
    want = entry["expected"]
    approx_reading(r, {
        "voltage": want["voltage"], "current": want["current"], "soc": want["battery_level"],
        "charge": want["cycle_charge"], "cycles": want["cycles"], "cell_voltages": want["cell_voltages"],
    })
    assert r["design_capacity"] == want["design_capacity"]
    assert r["temperatures"] == [t["value"] for t in want["temp_values"]]
    assert r["switches"] == {"charge": want["chrg_mosfet"], "discharge": want["dischrg_mosfet"],
                             "heater": want["heater"]}
    assert r.get("problem_code", 0) == want.get("problem_code", 0)


def test_requests_match_captures_and_reference() -> None:
    sent = {bytes.fromhex(h) for e in AIO for h in e["requests_hex"]}
    assert sent == {codec.REQUEST_STATUS, codec.REQUEST_CELLS, codec.REQUEST_PROBLEMS}
    assert codec.REQUEST_INFO.hex() == "eec000000041"


def test_snoop_probe_matches_neither_request_form() -> None:
    """Appendix B: batmon's SOK snoop probe is not a valid SOK request."""
    (entry,) = batmon("snoop_probe:sok")
    expect_error(codec.SokAssembler, bytes.fromhex(entry["hex"]), ChecksumError)


def test_chunkings_and_prefixes() -> None:
    wire = b"".join(chunks_of(AIO[0]))
    check_chunkings(codec.SokAssembler, wire)
    for raw in (wire[:20], codec.REQUEST_CELLS):
        check_prefixes(codec.SokAssembler, raw)


STATUS = bytes.fromhex("ccf0a26b00000000a08601409e01070063000021")


@pytest.mark.parametrize(("data", "error", "then"), [
    (STATUS[:-1] + b"\x22", ChecksumError, 0),
    (b"\x01\x02" + STATUS, FramingError, 1),
    (codec.REQUEST_CELLS[:-1] + b"\x00", ChecksumError, 0),
], ids=["crc", "junk", "request-crc"])
def test_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(codec.SokAssembler, data, error, then)


def test_unsupported_and_bounds() -> None:
    (frame,), _ = frames(codec.SokAssembler(), [codec.build_reply(0xF5, b"\x01")])
    with pytest.raises(UnsupportedFrame):
        codec.decode_frame(frame)
    with pytest.raises(UnsupportedFrame):
        codec.decode_status(codec.build_reply(0xF2, b""))
    # an F2 claiming 200 sensors reads at most the 6 that fit
    (mos,), _ = frames(codec.SokAssembler(), [codec.build_reply(codec.T_MOS, bytes((1, 0, 200)) + bytes(14))])
    assert len(codec.decode_mos(mos.raw)["temperatures"]) == codec.MAX_TEMPERATURES


def test_repeated_cell_parts_do_not_duplicate_cells() -> None:
    (entry,) = [e for e in AIO if "repeated" in e["test"]]
    r = codec.combine(frames(codec.SokAssembler(), chunks_of(entry))[0])
    assert len(r["cell_voltages"]) == 8


@pytest.mark.parametrize("lost", [0, 1], ids=["first F4 lost", "last F4 lost"])
def test_a_lost_cell_frame_leaves_cells_out_instead_of_shortening_them(lost: int) -> None:
    """Five cells come in two F4 frames and the count is not on the wire: with one of them lost (a bad
    CRC on a real link) the reading must not claim 4 cells, or none (found by the collector chaos test)."""
    state = quantized_state([3300, 3310, 3320, 3330, 3340], 0, [20], 50)
    e = SokEmulator(state)
    got, errors = frames(codec.SokAssembler(), e.receive(codec.REQUEST_STATUS) + e.receive(codec.REQUEST_CELLS))
    assert not errors
    cell_frames = [i for i, f in enumerate(got) if f.kind == codec.T_CELLS]
    assert len(cell_frames) == 2
    assert codec.combine(got)["cell_voltages"] == state.cell_voltages
    partial = codec.combine(f for i, f in enumerate(got) if i != cell_frames[lost])
    assert "cell_voltages" not in partial
    assert partial["voltage"] == pytest.approx(16.6)  # the rest of the reading is kept


states = st.builds(
    lambda cells, cur, temps, soc, cycles, charge, design, alarms, sw: quantized_state(
        cells, cur, temps, soc, cycles=cycles, charge=charge / 1000, design_capacity=design / 1000,
        alarms=alarms, switches={"charge": sw[0], "discharge": sw[1], "heater": sw[2]}),
    st.lists(st.integers(1, 5000), min_size=1, max_size=32), st.integers(-800000, 800000),
    st.lists(st.integers(-100, 200), max_size=6), st.integers(0, 100), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFF), st.tuples(*[st.booleans()] * 3))


@settings(max_examples=200, deadline=None)
@given(states)
def test_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    e = SokEmulator(state)
    wire = e.receive(codec.REQUEST_STATUS) + e.receive(codec.REQUEST_CELLS) + e.receive(codec.REQUEST_PROBLEMS)
    got, errors = frames(codec.SokAssembler(), wire)
    assert not errors
    r = codec.combine(got)
    assert r["cell_voltages"] == state.cell_voltages
    assert r["voltage"] == pytest.approx(round(state.voltage * 1000) / 1000)
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert r["temperatures"] == [int(t) for t in state.temperatures]
    assert (r["soc"], r["cycles"], r["problem_code"]) == (state.soc, state.cycles, state.alarms)
    assert r["charge"] == pytest.approx(state.charge) and r["design_capacity"] == pytest.approx(state.design_capacity)
    assert r["switches"] == state.switches


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(codec.SokAssembler, data, seed)
    garbage(codec.SokAssembler, b"\xcc" + data, seed)
    REGISTRY["sok"].decode([data])  # type: ignore[misc]


@pytest.mark.parametrize("cells", [8, 13, 16])
async def test_driver_over_emulated_link(cells: int) -> None:
    state = quantized_state([3300 + i for i in range(cells)], -2500, [21, 22], 64, charge=64.0, design_capacity=100.0,
                            cycles=9, alarms=0x8001)
    state.switches = {"charge": True, "discharge": False, "heater": True}
    emulator = SokEmulator(state)
    state.model = "SOK-24V100"
    info, (r1, r2) = await read_over_link(SokDriver, emulator, {"cell_wait": 0.1}, reads=2)
    assert info.model == "SOK-24V100"
    for r in (r1, r2):
        assert r["cell_voltages"] == state.cell_voltages
        assert r["current"] == pytest.approx(-25.0)
        assert r["switches"] == {"charge": True, "discharge": False, "heater": True}
        assert r["problem_code"] == 0x8001 and r["temperatures"] == [21, 22]


class NoF9(SokEmulator):
    def answer(self, command: int) -> list[bytes]:
        return [] if command == codec.CMD_PROBLEMS else super().answer(command)


async def test_driver_copes_without_problem_flags() -> None:
    state = quantized_state([3300] * 4, 0, [20], 50)
    _, (r1, r2) = await read_over_link(SokDriver, NoF9(state), {"cell_wait": 0.05, "problem_timeout": 0.2}, reads=2)
    assert "problem_code" not in r1 and r2["cell_voltages"] == state.cell_voltages
