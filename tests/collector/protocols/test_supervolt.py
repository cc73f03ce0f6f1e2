"""Supervolt / E&J codec: vectors (aiobmsble ej/ag, batmon), framing, round trips, garbage, driver."""

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

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame, UsageError
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.supervolt import codec
from bmsbus.collector.protocols.supervolt.driver import SupervoltDriver
from bmsbus.collector.protocols.supervolt.emulator import SupervoltEmulator

AIO = aio("ej_bms") + aio("ag_bms")


def decode_entry(entry: dict, verify: bool = True) -> dict:
    asm = codec.SupervoltAssembler(verify_checksum=verify)
    got, _ = frames(asm, chunks_of(entry))
    reading: dict = {}
    for f in got:
        reading.update(codec.decode_realtime(f) if f.kind == codec.KIND_REALTIME else codec.decode_capacity(f))
    return reading


@pytest.mark.parametrize("entry", AIO, ids=lambda e: e["test"].split("::")[-1] + ":" + e["bms"])
def test_aiobmsble_vectors(entry: dict) -> None:
    """aiobmsble (+ = charging): cycle_charge is its remaining Ah (our `charge`); runtime, cycle_capacity,
    power and delta are derived there, not wire fields."""
    verify = not entry["device"]["name"].startswith("libattU")
    got = decode_entry(entry, verify)
    want = entry["expected"]
    approx_reading(got, {
        "current": want["current"], "soc": want["battery_level"], "cycles": want["cycles"],
        "cell_voltages": want["cell_voltages"], "voltage": want["voltage"], "charge": want["cycle_charge"],
        "problem_code": want["problem_code"],
    })
    assert got["temperatures"][0] == want["temp_values"][0]["value"]
    assert got["switches"] == {"charge": want["chrg_mosfet"], "discharge": want["dischrg_mosfet"]}
    if "design_capacity" in want:
        assert got["design_capacity"] == want["design_capacity"]
    assert got["balancing"] == [] and want["balancer"] == 0


def test_libatt_frame_without_checksum_needs_the_option() -> None:
    (entry,) = [e for e in AIO if e["device"]["name"].startswith("libattU")]
    got, errors = frames(codec.SupervoltAssembler(), chunks_of(entry))
    assert not got and any(isinstance(e, ChecksumError) for e in errors)


def test_module_noise_is_dropped_and_junk_reported() -> None:
    entry = AIO[0]  # ej test_update: AT\r\n and "illegal" around both frames
    got, errors = frames(codec.SupervoltAssembler(), chunks_of(entry))
    assert [f.kind for f in got] == [codec.KIND_REALTIME, codec.KIND_CAPACITY]
    assert errors and all(type(e) is FramingError for e in errors)


@pytest.mark.parametrize("entry", batmon("supervolt", "request"), ids=lambda e: e["expected"]["ascii"])
def test_batmon_requests(entry: dict) -> None:
    assert bytes.fromhex(entry["hex"]) in (codec.REQUEST_REALTIME, codec.REQUEST_CAPACITY)
    assert bytes.fromhex(entry["hex"]).decode() == entry["expected"]["ascii"]


def test_batmon_synthesized_frame_is_rejected_cleanly_and_decodes_once_repaired() -> None:
    """Appendix B: batmon's synthesized realtime reply has length field 0x50 for 128 chars and checksum 01
    (should be 08). It must give no frame, only FramingError; with length and checksum repaired it decodes
    to batmon's values (its loadA -1.0 is + = discharge: 1 A charging here)."""
    (entry,) = batmon("supervolt", "response")  # also: cmd byte 02 without the 0x80 reply flag
    wire = bytes.fromhex(entry["hex"])
    got, errors = frames(codec.SupervoltAssembler(), [wire])
    assert not got and errors and all(type(e) is FramingError for e in errors)
    assert codec.ascii_checksum(wire[1:-3]) == 0x08 and wire[-3:-1] == b"01"  # as Appendix B says
    body = wire[1:7] + b"0080" + wire[11:-3]
    repaired = b":" + body + f"{codec.ascii_checksum(body):02X}".encode() + b"~"
    (frame,), errors = frames(codec.SupervoltAssembler(), [repaired])
    assert not errors
    r = codec.decode_realtime(frame)
    want = entry["expected"]
    assert r["voltage"] == pytest.approx(want["totalV"])
    assert r["soc"] == want["soc"]
    assert r["current"] == pytest.approx(-want["loadA"])
    assert r["temperatures"] == want["tempC"][:1]
    assert codec.working_state(frame) == want["workingState"]
    assert r["switches"] == {"charge": True, "discharge": True} and r["alarms"] == []


def test_chunkings_and_prefixes() -> None:
    for entry in AIO[:2]:
        wire = b"".join(chunks_of(entry))
        check_chunkings(codec.SupervoltAssembler, wire)
        for raw in [f.raw for f in frames(codec.SupervoltAssembler(), [wire])[0]]:
            check_prefixes(codec.SupervoltAssembler, raw)


GOOD = codec.build_frame(0, codec.KIND_CAPACITY, 0x31, bytes(8))


@pytest.mark.parametrize(("data", "error", "then"), [
    (GOOD[:-3] + b"00~", ChecksumError, 0),
    (GOOD[:-1] + b"!", FramingError, 0),  # no `~` where the length says
    (b":00903100ZZ" + GOOD[11:], FramingError, 0),  # length field not hex
    (b":0090310004" + GOOD[11:], FramingError, 0),  # length below a request
    (GOOD[:12] + b"g" + GOOD[13:], FramingError, 0),  # non-hex inside
    (b"xyz" + GOOD, FramingError, 1),  # junk first, then the frame
    (GOOD[:20] + GOOD, FramingError, 1),  # cut short by a new frame, which decodes
], ids=["checksum", "tail", "length-hex", "length-short", "non-hex", "junk", "cut"])
def test_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(codec.SupervoltAssembler, data, error, then)


def test_unsupported_frames() -> None:
    other = frames(codec.SupervoltAssembler(), [codec.build_frame(0, 0x85, 0x31, bytes(4))])[0][0]
    with pytest.raises(UnsupportedFrame):
        codec.decode_frame(other)
    with pytest.raises(UnsupportedFrame):
        codec.decode_realtime(frames(codec.SupervoltAssembler(), [GOOD])[0][0])
    assert "error" in codec.decode([codec.build_frame(0, 0x85, 0x31, bytes(3))])[0]
    assert codec.decode([codec.REQUEST_REALTIME])[0]["request"] is True


def test_working_state_bits() -> None:
    state = quantized_state([3300] * 4, 0, [20], 50, alarms=0b10_0000_0001)
    state.switches = {"charge": False, "discharge": True}
    e = SupervoltEmulator(state)
    (frame,), _ = frames(codec.SupervoltAssembler(), e.receive(codec.REQUEST_REALTIME))
    r = codec.decode_realtime(frame)
    assert r["alarms"] == ["overcharge_protection", "discharge_undertemperature"]
    assert r["problem_code"] == 0x0004 | 0x0800
    assert r["switches"] == {"charge": False, "discharge": True}


states = st.builds(
    lambda cells, cur, temp, soc, cycles, charge, cap, bal: quantized_state(
        cells, cur, [temp], soc, cycles=cycles, charge=charge / 10, capacity=cap / 10, design_capacity=cap / 10,
        balancing=[i for i in bal if i < len(cells)]),
    st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=16), st.integers(-50000, 50000), st.integers(-40, 215),
    st.integers(0, 100), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 15), unique=True, max_size=4))


@settings(max_examples=200, deadline=None)
@given(states, st.booleans())
def test_round_trip(state, single_frame: bool) -> None:  # type: ignore[no-untyped-def]
    e = SupervoltEmulator(state, single_frame=single_frame)
    wire = e.receive(codec.REQUEST_REALTIME) + e.receive(codec.REQUEST_CAPACITY)
    got, errors = frames(codec.SupervoltAssembler(), wire)
    assert not errors and len(got) == 2
    r = {**codec.decode_realtime(got[0]), **codec.decode_capacity(got[1])}
    assert r["cell_voltages"] == state.cell_voltages
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert r["temperatures"] == [int(state.temperatures[0])]
    assert (r["soc"], r["cycles"]) == (state.soc, state.cycles)
    assert r["charge"] == pytest.approx(state.charge) and r["capacity"] == pytest.approx(state.capacity)
    assert r["balancing"] == sorted(state.balancing)
    assert codec.has_capacity(got[0]) is single_frame


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(codec.SupervoltAssembler, data, seed)
    garbage(codec.SupervoltAssembler, b":" + data.hex().encode()[:300] + b"~", seed)
    REGISTRY["supervolt"].decode([data])  # type: ignore[misc]


@pytest.mark.parametrize("single_frame", [False, True])
async def test_driver_over_emulated_link(single_frame: bool) -> None:
    state = quantized_state([3301, 3302, 3299, 3300], -1234, [21], 77, charge=77.0, capacity=100.0,
                            design_capacity=100.0, cycles=12)
    info, (r,) = await read_over_link(SupervoltDriver, SupervoltEmulator(state, single_frame=single_frame))
    assert info.manufacturer
    assert r["cell_voltages"] == state.cell_voltages and r["current"] == pytest.approx(-12.34)
    assert (r["soc"], r["cycles"], r["charge"], r["capacity"]) == (77, 12, 77.0, 100.0)
    assert r["voltage"] == pytest.approx(13.202)


async def test_driver_is_read_only() -> None:
    state = quantized_state([3300] * 4, 0, [20], 50)
    async with __import__("bmsbus.collector.links.emulated", fromlist=["EmulatedLink"]).EmulatedLink(
            SupervoltEmulator(state)) as link:
        driver = SupervoltDriver(link)
        assert driver.writable_switches() == ()
        with pytest.raises(UsageError):
            await driver.set_switch("charge", False)


def test_registry_entries() -> None:
    for name in ("supervolt", "supervolt_ff00"):
        entry = REGISTRY[name]
        assert entry.ble is not None and entry.emulator is not None and entry.decode is not None
        assert entry.driver.quantities
