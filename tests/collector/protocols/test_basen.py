"""Basen codecs: BLE (3A/3B frames, sum16) and RS485 (7E .. 0D, framed by LEN): vectors, round trips, drivers."""

from __future__ import annotations

from functools import reduce
from operator import xor

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
    record_writes,
)

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.basen import ble, uart
from bmsbus.collector.protocols.basen.driver import BasenBleDriver, BasenUartDriver
from bmsbus.collector.protocols.basen.emulator import BasenBleEmulator, BasenUartEmulator

BLE_REQ = batmon("basen", "request")
BLE_RESP = batmon("basen", "response")
(UART_REQ,) = batmon("basen_uart", "request")
(UART_RESP,) = batmon("basen_uart", "response")
INFO = bytes.fromhex(UART_RESP["hex"])


# --- BLE ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", BLE_REQ, ids=lambda e: e["hex"])
def test_ble_requests(entry: dict) -> None:
    assert ble.build_request(entry["expected"]["frame_type"]) == bytes.fromhex(entry["hex"])


def test_ble_reply_vectors() -> None:
    (status,), (general,), (cells,) = (frames(ble.BasenAssembler(), [bytes.fromhex(e["hex"])])[0] for e in BLE_RESP)
    s, w = ble.decode_status(status), BLE_RESP[0]["expected"]
    assert s["current"] == w["current_charging"] and s["voltage"] == w["total_v"]
    assert s["temperatures"] == w["temps_c"] and s["charge"] == w["remaining_ah"] and s["soc"] == w["soc"]
    assert s["switches"] == {"charge": w["charge_mosfet"], "discharge": w["discharge_mosfet"]}
    assert (s["problem_code"] != 0) == w["problem"]
    g, w = ble.decode_general(general), BLE_RESP[1]["expected"]
    assert (g["design_capacity"], g["capacity"], g["cycles"]) == (w["nominal_ah"], w["real_ah"], w["cycles"])
    assert ble.decode_frame(general)["nominal_voltage"] == w["nominal_v"]
    c = ble.decode_cells(cells)
    assert [round(c[i] * 1000) for i in sorted(c)] == [mv for mv in BLE_RESP[2]["expected"]["cells_mv"] if mv]


def test_ble_chunkings_and_prefixes() -> None:
    for entry in BLE_RESP + BLE_REQ:
        wire = bytes.fromhex(entry["hex"])
        check_chunkings(ble.BasenAssembler, wire)
        check_prefixes(ble.BasenAssembler, wire)


STATUS = bytes.fromhex(BLE_RESP[0]["hex"])


@pytest.mark.parametrize(("data", "error", "then"), [
    (STATUS[:-4] + b"\x00\x00" + STATUS[-2:], ChecksumError, 0),
    (STATUS[:-1] + b"\x00", FramingError, 0),
    (b"\x01\x02" + STATUS, FramingError, 1),
], ids=["sum16", "tail", "junk"])
def test_ble_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(ble.BasenAssembler, data, error, then)


def test_ble_unsupported() -> None:
    (frame,), _ = frames(ble.BasenAssembler(), [ble.build_frame(0x30, bytes(4))])
    with pytest.raises(UnsupportedFrame):
        ble.decode_frame(frame)
    with pytest.raises(UnsupportedFrame):
        ble.decode_status(frame)


ble_states = st.builds(
    lambda cells, cur, temps, soc, charge, cap, design, cycles, alarms, sw: quantized_state(
        cells, cur, temps, soc, charge=charge / 1000, capacity=cap / 1000, design_capacity=design / 1000,
        cycles=cycles, alarms=alarms, switches={"charge": sw[0], "discharge": sw[1]}),
    st.lists(st.integers(1, 4500), min_size=1, max_size=24), st.integers(-10**7, 10**7),
    st.lists(st.integers(-128, 127), min_size=4, max_size=4), st.integers(0, 100), st.integers(0, 10**9),
    st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 0xFFFF),
    st.integers(0, 0x7F7F).map(lambda a: a & 0x7F7F),  # trip bits only
    st.tuples(st.booleans(), st.booleans()))


@settings(max_examples=200, deadline=None)
@given(ble_states)
def test_ble_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    e = BasenBleEmulator(state)
    wire = [f for r in (ble.REQUEST_STATUS, ble.REQUEST_GENERAL, ble.REQUEST_CELLS_1, ble.REQUEST_CELLS_2)
            for f in e.receive(r)]
    (status, general, c1, c2), errors = frames(ble.BasenAssembler(), wire)
    assert not errors
    s, g = ble.decode_status(status), ble.decode_general(general)
    assert ble.cell_list({**ble.decode_cells(c1), **ble.decode_cells(c2)}) == state.cell_voltages
    assert s["current"] == pytest.approx(state.current, abs=1e-9)
    assert s["voltage"] == pytest.approx(round(state.voltage * 1000) / 1000)
    assert s["temperatures"] == state.temperatures and s["soc"] == state.soc
    assert s["switches"] == state.switches and (s["problem_code"] & 0xFFFF) == state.alarms
    assert (g["capacity"], g["design_capacity"], g["cycles"], s["charge"]) == pytest.approx(
        (state.capacity, state.design_capacity, state.cycles, state.charge))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_ble_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(ble.BasenAssembler, data, seed)
    garbage(ble.BasenAssembler, b"\x3a\x16" + data, seed)
    REGISTRY["basen"].decode([data])  # type: ignore[misc]


@pytest.mark.parametrize("cells", [8, 12, 16])
async def test_ble_driver_over_emulated_link(cells: int) -> None:
    state = quantized_state([3200 + i for i in range(cells)], -1500, [18, 20, 25, 25], 8, charge=9.059,
                            capacity=106.641, design_capacity=100.0, cycles=7)
    _, (r,) = await read_over_link(BasenBleDriver, BasenBleEmulator(state))
    assert r["cell_voltages"] == state.cell_voltages and r["current"] == -15.0
    assert (r["capacity"], r["design_capacity"], r["cycles"], r["charge"]) == (106.641, 100.0, 7, 9.059)


# --- RS485 -------------------------------------------------------------------------------------------

def test_uart_request_vector() -> None:
    """GHswitt's INFO request: cmd 1, checksum (XOR ^ SUM) & 0xFF over 7E..data (here 7E 01 01 00)."""
    want = UART_REQ["expected"]
    wire = bytes.fromhex(UART_REQ["hex"])
    assert want["checksum"] == "(xor ^ sum) & 0xff"
    assert uart.build_request(want["cmd"]) == uart.build_frame(want["cmd"]) == uart.REQUEST_INFO == wire
    head = wire[:-2]
    assert head == bytes((uart.SOI, uart.DEFAULT_ADDRESS, want["cmd"], 0))
    assert wire[-2] == (reduce(xor, head) ^ sum(head)) & 0xFF == uart.checksum(head) and wire[-1] == uart.EOI
    (frame,), errors = frames(uart.BasenUartAssembler(), [wire])
    assert not errors and frame.kind == want["cmd"] == uart.CMD_INFO
    assert uart.decode_frame(frame) == {"frame_type": want["cmd"], "request": True, "address": 1}


async def test_uart_driver_sends_the_captured_request() -> None:
    emu = record_writes(BasenUartEmulator(quantized_state([3300] * 4, 0, [20], 50)))
    await read_over_link(BasenUartDriver, emu, mtu=None, reads=2)
    assert emu.received == [bytes.fromhex(UART_REQ["hex"])] * 2
    assert uart.build_request(UART_REQ["expected"]["cmd"], address=1) == emu.received[0]


def test_uart_vectors() -> None:
    (frame,), errors = frames(uart.BasenUartAssembler(), [INFO])
    assert not errors
    r, w = uart.decode_info(frame), UART_RESP["expected"]
    assert len(r["cell_voltages"]) == w["cells"]
    assert round(r["cell_voltages"][0] * 1000) == w["cell0_mv"]
    assert round(r["cell_voltages"][15] * 1000) == w["cell15_mv"]
    assert (r["current"], r["soc"], r["charge"], r["cycles"], r["voltage"], r["soh"]) == (
        w["current_a"], w["soc"], w["remaining_ah"], w["cycles"], w["voltage"], w["soh"])
    assert r["temperatures"] == w["temps_c"] and r["mos_temperature"] == w["mos_temp"]  # ambient: no pack key
    assert r["switches"] == {"charge": True, "discharge": True} and r["alarms"] == [] and r["problem_code"] == 0


def test_uart_frames_by_length_not_terminator() -> None:
    """0x0D is the high byte of every cell voltage in the capture; a terminator split would cut at byte 5."""
    assert INFO.count(0x0D) > 10
    check_chunkings(uart.BasenUartAssembler, INFO)
    check_prefixes(uart.BasenUartAssembler, INFO)


def test_uart_wide_blocks_are_walked() -> None:
    """Blocks 0x0B.. carry 4-byte values; a 2-byte walk derails (and would overrun)."""
    kinds = [k for k, _, _ in uart.blocks(uart.data_of(frames(uart.BasenUartAssembler(), [INFO])[0][0]), 2 + 2 * 16)]
    assert kinds == list(range(0x02, 0x11))


@pytest.mark.parametrize(("data", "error", "then"), [
    (INFO[:-2] + bytes(((INFO[-2] + 1) & 0xFF,)) + INFO[-1:], ChecksumError, 0),
    (INFO[:-1] + b"\x0a", FramingError, 0),
    (b"\x0d\x0d" + INFO, FramingError, 1),
    (b"\x7e\x01\x01\xf5" + bytes(10), FramingError, 0),
], ids=["checksum", "eoi", "junk", "length"])
def test_uart_malformed(data: bytes, error: type, then: int) -> None:
    expect_error(uart.BasenUartAssembler, data, error, then)


def test_uart_info_overruns_and_errors() -> None:
    bad = uart.build_frame(uart.CMD_INFO, bytes((1, 2)) + bytes(4) + bytes((0x0B, 2, 0, 0)))
    (frame,), _ = frames(uart.BasenUartAssembler(), [bad])
    with pytest.raises(FramingError):
        uart.decode_info(frame)
    (err,), _ = frames(uart.BasenUartAssembler(), [uart.build_frame(uart.CMD_INFO, b"\x02")])
    assert uart.decode_frame(err)["error_code"] == 2
    with pytest.raises(UnsupportedFrame):
        uart.decode_info(err)


def test_uart_status_sign_and_alarms() -> None:
    status = bytearray(10)
    status[3] = 0x02 | 0x04  # discharging + short circuit protection
    status[2] = 0x10  # charge MOS off
    assert uart.signed_current(3.0, bytes(status)) == -3.0
    assert uart.status_alarms(bytes(status)) == ["short_circuit_protection"]
    assert uart.status_problem_code(bytes(status)) == 0x04 << 24


uart_states = st.builds(
    lambda cells, cur, temps, mos, soc, charge, cycles, bal, alarms, sw: quantized_state(
        cells, cur, temps, soc, mos_temperature=float(mos), charge=charge / 100, cycles=cycles,
        balancing=sorted(i for i in bal if i < len(cells)), alarms=alarms,
        switches={"charge": sw[0], "discharge": sw[1]}),
    st.lists(st.integers(1, 4095), min_size=1, max_size=48).filter(lambda c: sum(c) <= 655350),
    st.integers(-29900, 30000), st.lists(st.integers(-50, 200), min_size=1, max_size=4), st.integers(-50, 200),
    st.integers(0, 100), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sets(st.integers(0, 47)),
    st.integers(0, 2**48 - 1), st.tuples(st.booleans(), st.booleans()))


@settings(max_examples=200, deadline=None)
@given(uart_states)
def test_uart_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    (frame,), errors = frames(uart.BasenUartAssembler(), BasenUartEmulator(state).receive(uart.REQUEST_INFO))
    assert not errors
    r = uart.decode_info(frame)
    assert r["cell_voltages"] == state.cell_voltages and r["balancing"] == state.balancing
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert r["temperatures"] == state.temperatures and r["mos_temperature"] == state.mos_temperature
    assert (r["soc"], r["cycles"]) == (state.soc, state.cycles) and r["charge"] == pytest.approx(state.charge)
    assert r["switches"] == state.switches
    assert r["alarms"] == [code for n, (_, _, code) in enumerate(uart.STATUS_ALARMS) if state.alarms >> n & 1]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_uart_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(uart.BasenUartAssembler, data, seed)
    garbage(uart.BasenUartAssembler, b"\x7e\x01\x01" + data, seed)
    REGISTRY["basen_uart"].decode([data])  # type: ignore[misc]


async def test_uart_driver_over_emulated_link() -> None:
    state = quantized_state([3396, 3393, 3392, 3393], 1250, [21, 22], 99, charge=280.0, cycles=28)
    _, (r,) = await read_over_link(BasenUartDriver, BasenUartEmulator(state), mtu=None)
    assert r["cell_voltages"] == state.cell_voltages and r["current"] == 12.5 and r["cycles"] == 28


async def test_uart_driver_ignores_other_addresses() -> None:
    state = quantized_state([3300] * 4, 0, [20], 50)
    with pytest.raises(TimeoutError):
        await read_over_link(BasenUartDriver, BasenUartEmulator(state, address=2), {"address": 1}, mtu=None,
                             timeout=0.3)
