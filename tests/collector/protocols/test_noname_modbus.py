"""noname Modbus-over-NUS codec: batmon #131 vectors, Modbus framing, round trips, garbage, driver."""

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
from bmsbus.collector.protocols import REGISTRY, modbus_rtu
from bmsbus.collector.protocols.noname_modbus import codec
from bmsbus.collector.protocols.noname_modbus.driver import ModbusException, NonameModbusDriver
from bmsbus.collector.protocols.noname_modbus.emulator import NonameModbusEmulator

REQUESTS = batmon("noname_modbus", "request")
REPLIES = batmon("noname_modbus", "response")


def asm() -> modbus_rtu.ModbusRtuAssembler:
    return codec.new_assembler()


@pytest.mark.parametrize("entry", REQUESTS, ids=lambda e: e["hex"])
def test_requests(entry: dict) -> None:
    reg, count = entry["expected"]["start"], entry["expected"]["count"]
    assert codec.COUNTS[reg] == count
    assert codec.build_read(reg) == bytes.fromhex(entry["hex"])


def test_reply_vectors() -> None:
    """batmon's expectations are per block; charge and discharge A become one current (+ = charging)."""
    info, cells, cap = (frames(asm(), [bytes.fromhex(e["hex"])])[0][0] for e in REPLIES)
    n, t = codec.decode_info(modbus_rtu.registers(info))
    assert (n, t) == (REPLIES[0]["expected"]["cell_count"], REPLIES[0]["expected"]["temp_count"])
    r = codec.decode_cells(modbus_rtu.registers(cells), n)
    assert r["cell_voltages"] == [mv / 1000 for mv in REPLIES[1]["expected"]["cells_mv"]]
    assert r["voltage"] == REPLIES[1]["expected"]["pack_v"]
    assert codec.decode_cells(modbus_rtu.registers(cells))["cell_voltages"] == r["cell_voltages"]  # 0xEE49 = empty
    c = codec.decode_capacity(modbus_rtu.registers(cap))
    w = REPLIES[2]["expected"]
    assert c["temperatures"] == [w["temp_c"]]
    assert c["current"] == pytest.approx(w["charge_a"] - w["discharge_a"])
    assert (c["soc"], c["soh"], c["charge"], c["capacity"], c["design_capacity"], c["cycles"]) == (
        w["soc"], w["soh"], w["remaining_ah"], w["full_ah"], w["design_ah"], w["cycles"])
    decoded = codec.decode([bytes.fromhex(e["hex"]) for e in REPLIES])
    assert [d["register"] for d in decoded] == [codec.REG_INFO, codec.REG_CELLS, codec.REG_CAPACITY]


def test_chunkings_and_prefixes() -> None:
    for entry in REPLIES:
        wire = bytes.fromhex(entry["hex"])
        check_chunkings(asm, wire)
        check_prefixes(asm, wire)


CAP = bytes.fromhex(REPLIES[2]["hex"])


@pytest.mark.parametrize(("data", "error", "then"), [
    (CAP[:-1] + bytes(((CAP[-1] + 1) & 0xFF,)), ChecksumError, 0),
    (b"\x55\x66" + CAP, FramingError, 1),
    (b"\x01\x07\x00\x00", FramingError, 0),  # unknown function
], ids=["crc", "junk", "function"])
def test_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(asm, data, error, then)


def test_unknown_block_and_exception() -> None:
    (other,), _ = frames(asm(), [modbus_rtu.read_reply(1, bytes(6))])
    with pytest.raises(UnsupportedFrame):
        codec.decode_frame(other)
    (exc,), _ = frames(asm(), [modbus_rtu.exception_reply(1, 3, 2)])
    assert codec.decode_frame(exc) == {"frame_type": 0x83, "exception": 2}


states = st.builds(
    lambda cells, cur, temp, soc, soh, charge, cap, design, cycles: quantized_state(
        cells, cur * 10, [temp / 10], soc, soh=float(soh), charge=charge / 10, capacity=cap / 10,
        design_capacity=design / 10, cycles=cycles),
    st.lists(st.integers(1, 0xEE48), min_size=1, max_size=32).filter(lambda c: sum(c) < 6_500_000),
    st.integers(-6500, 6500), st.integers(-400, 1000), st.integers(0, 100), st.integers(0, 100),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))


@settings(max_examples=200, deadline=None)
@given(states)
def test_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    e = NonameModbusEmulator(state)
    wire = [e.receive(codec.REQUEST_INFO)[0], e.receive(codec.REQUEST_CELLS)[0], e.receive(codec.REQUEST_CAPACITY)[0]]
    (info, cells, cap), errors = frames(asm(), wire)
    assert not errors
    n, _ = codec.decode_info(modbus_rtu.registers(info))
    r = {**codec.decode_cells(modbus_rtu.registers(cells), n), **codec.decode_capacity(modbus_rtu.registers(cap))}
    assert r["cell_voltages"] == state.cell_voltages
    assert r["voltage"] == pytest.approx(round(state.voltage * 100) / 100)
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert r.get("temperatures", []) == ([state.temperatures[0]] if state.temperatures[0] != -40.0 else [])
    assert (r["soc"], r["soh"], r["cycles"]) == (state.soc, state.soh, state.cycles)
    assert (r["charge"], r["capacity"], r["design_capacity"]) == pytest.approx(
        (state.charge, state.capacity, state.design_capacity))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(asm, data, seed)
    garbage(asm, b"\x01\x03" + data, seed)
    REGISTRY["noname_modbus"].decode([data])  # type: ignore[misc]


async def test_driver_over_emulated_link() -> None:
    state = quantized_state([3629, 3604, 3628, 3629], 70, [24.0], 100, charge=996.9, capacity=1000.0,
                            design_capacity=1000.0, cycles=2)
    _, (r,) = await read_over_link(NonameModbusDriver, NonameModbusEmulator(state))
    assert r["cell_voltages"] == state.cell_voltages and r["voltage"] == 14.49
    assert r["current"] == 0.7 and r["temperatures"] == [24.0] and r["charge"] == 996.9


async def test_driver_reports_modbus_exceptions() -> None:
    state = quantized_state([3300] * 4, 0, [20], 50)
    with pytest.raises(ModbusException):
        await read_over_link(NonameModbusDriver, NonameModbusEmulator(state, slave=1), {"slave": 1},
                             link_cls=_WrongBlocks)


class _WrongBlocks(__import__("bmsbus.collector.links.emulated", fromlist=["EmulatedLink"]).EmulatedLink):
    async def send(self, data: bytes) -> None:  # ask for one register too many: the BMS refuses
        await super().send(modbus_rtu.read_request(data[0], int.from_bytes(data[2:4], "big"),
                                                   int.from_bytes(data[4:6], "big") + 1))
