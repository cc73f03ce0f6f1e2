"""Basen BMS over BLE: sans-I/O codec. protocols.md §13.

Wire summary (service FA00, notify FA01, write FA02):
- frame `3A|3B  16  type  N  payload(N)  sum16 LE over bytes 1..3+N  0D 0A` (N + 8 bytes); requests use the
  same frame with a one-byte payload 00 (status `3B 16 2A 01 00 41 00 0D 0A`).
- replies (LE, absolute offsets): 0x2A status, 0x2B general info, 0x24 cells 1-12, 0x25 cells 13-24.

Confidence low-medium (ported by batmon from syssi's ESPHome component). Pure: stdlib, ..codec, ..fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ...checksums import sum16
from ...codec import BufferedAssembler, ChecksumError, Frame, FramingError, Reading, UnsupportedFrame, UsageError
from ..decode_util import decode_stream
from ..fields import Field, FieldTable

SOF: Final = frozenset({0x3A, 0x3B})
ADDRESS: Final = 0x16
TAIL: Final = b"\r\n"
OVERHEAD: Final = 8  # SOF, address, type, N, checksum (2), CR LF

T_STATUS: Final = 0x2A
T_GENERAL: Final = 0x2B
T_CELLS_1: Final = 0x24  # cells 1-12
T_CELLS_2: Final = 0x25  # cells 13-24
CELLS_PER_BLOCK: Final = 12
CELL_BLOCKS: Final = {T_CELLS_1: 0, T_CELLS_2: CELLS_PER_BLOCK}
MOS_ON: Final = 0x80  # bit 7 of the charge / discharge state bytes
TRIP_MASK: Final = 0x7F
FULLY_CHARGED: Final = 0x10  # bit 4 of the charge warning byte: benign


def build_frame(frame_type: int, payload: bytes, sof: int = 0x3A, address: int = ADDRESS) -> bytes:
    if sof not in SOF or len(payload) > 0xFF:
        raise UsageError("Basen frame: SOF 3A/3B and at most 255 payload bytes")
    body = bytes((address, frame_type, len(payload))) + payload
    return bytes((sof,)) + body + sum16(body).to_bytes(2, "little") + TAIL


def build_request(frame_type: int) -> bytes:
    """Requests as batmon sends them: status with SOF 3B, the others 3A; payload 00."""
    return build_frame(frame_type, b"\x00", 0x3B if frame_type == T_STATUS else 0x3A)


REQUEST_STATUS: Final = build_request(T_STATUS)  # 3b 16 2a 01 00 41 00 0d 0a
REQUEST_GENERAL: Final = build_request(T_GENERAL)  # 3a 16 2b 01 00 42 00 0d 0a
REQUEST_CELLS_1: Final = build_request(T_CELLS_1)  # 3a 16 24 01 00 3b 00 0d 0a
REQUEST_CELLS_2: Final = build_request(T_CELLS_2)


class BasenAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=type, raw, address). Requests and replies share the format
    (a request is a frame with a 1-byte payload)."""

    NAME = "Basen frame"

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = next((i for i, b in enumerate(buf) if b in SOF), -1)
        if not self._at_frame_start(start):
            return None
        if len(buf) < 4:
            return None
        total = buf[3] + OVERHEAD
        if len(buf) < total:
            return None
        if buf[total - 2 : total] != TAIL:
            del buf[:1]
            raise FramingError("Basen frame does not end with CR LF")
        expected = sum16(bytes(buf[1 : total - 4]))
        actual = int.from_bytes(buf[total - 4 : total - 2], "little")
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "Basen frame")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(raw[2], raw, raw[1])



STATUS_FIELDS: Final = FieldTable((
    Field("current", 4, 4, signed=True, scale=0.001),  # + = charging
    Field("voltage", 8, 4, scale=0.001),
    Field("charge", 16, 4, scale=0.001),
    Field("soc", 24, 1),
), byteorder="little")
STATUS_RAW: Final = FieldTable((
    Field("charge_state", 20, 1),
    Field("discharge_state", 21, 1),
    Field("charge_warning", 22, 1),
    Field("discharge_warning", 23, 1),
), byteorder="little")
TEMPERATURE: Final = Field("temperature", 12, 1, signed=True)  # 4 sensors, 12..15
TEMPERATURES: Final = 4
GENERAL_FIELDS: Final = FieldTable((
    Field("design_capacity", 4, 4, scale=0.001),  # nominal mAh
    Field("capacity", 12, 4, scale=0.001),  # real (full) mAh
    Field("cycles", 26, 2),
), byteorder="little")
NOMINAL_VOLTAGE: Final = Field("nominal_voltage", 8, 4, scale=0.001)
CELL: Final = Field("cell", 4, 2)  # u16 LE mV at + 2n


def problem_code(charge_state: int, discharge_state: int, charge_warning: int, discharge_warning: int) -> int:
    """Trip bits of both state bytes and both warning bytes (the benign "fully charged" bit masked)."""
    return ((charge_state & TRIP_MASK) | (discharge_state & TRIP_MASK) << 8
            | (charge_warning & ~FULLY_CHARGED & 0xFF) << 16 | discharge_warning << 24)


def _payload(frame: Frame, frame_type: int) -> bytes:
    if frame.kind != frame_type:
        raise UnsupportedFrame(f"not a Basen {frame_type:#04x} frame: {frame.kind:#04x}")
    return frame.raw


def decode_status(frame: Frame) -> Reading:
    raw = _payload(frame, T_STATUS)
    r: Reading = dict(STATUS_FIELDS.decode(raw))
    bits = STATUS_RAW.decode(raw)
    r["temperatures"] = [TEMPERATURE.raw(raw, "little", i) for i in range(TEMPERATURES)]
    r["switches"] = {"charge": bool(int(bits["charge_state"]) & MOS_ON),
                     "discharge": bool(int(bits["discharge_state"]) & MOS_ON)}
    r["problem_code"] = problem_code(*(int(bits[k]) for k in ("charge_state", "discharge_state", "charge_warning",
                                                              "discharge_warning")))
    return r


def decode_general(frame: Frame) -> Reading:
    return dict(GENERAL_FIELDS.decode(_payload(frame, T_GENERAL)))


def decode_cells(frame: Frame) -> dict[int, float]:
    """A 0x24 / 0x25 block -> {0-based cell index: V}; 0 mV slots are absent cells."""
    if frame.kind not in CELL_BLOCKS:
        raise UnsupportedFrame(f"not a Basen cell block: {frame.kind:#04x}")
    first = CELL_BLOCKS[int(frame.kind)]
    raw = frame.raw
    n = min(raw[3] // 2, CELLS_PER_BLOCK)
    out = {}
    for i in range(n):
        mv = CELL.raw(raw, "little", 2 * i)
        if mv:
            out[first + i] = mv / 1000
    return out


def cell_list(cells: dict[int, float]) -> list[float]:
    """Cells 1..N without gaps (a gap ends the list)."""
    n = next(i for i in range(len(cells) + 1) if i not in cells)
    return [cells[i] for i in range(n)]


def decode_frame(frame: Frame) -> dict[str, Any]:
    if frame.raw[3] == 1:  # a request: 1-byte payload
        return {"frame_type": frame.kind, "request": True}
    if frame.kind == T_STATUS:
        return {"frame_type": T_STATUS, **decode_status(frame)}
    if frame.kind == T_GENERAL:
        return {"frame_type": T_GENERAL, **decode_general(frame),
                "nominal_voltage": NOMINAL_VOLTAGE.convert(NOMINAL_VOLTAGE.raw(frame.raw, "little"))}
    if frame.kind in CELL_BLOCKS:
        return {"frame_type": frame.kind, "cells": {str(i + 1): v for i, v in decode_cells(frame).items()}}
    raise UnsupportedFrame(f"Basen frame type {frame.kind:#04x}")


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode basen HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = BasenAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
