"""SOK / ABC-BMS (Chunguang Song; also "NB-*" and Hoover packs): sans-I/O codec. protocols.md §9.

Wire summary (BLE FFE0, notify FFE1, write FFE2):
- host -> BMS: 6-byte request `EE <cmd> 00 00 00 <CRC-8/MAXIM over bytes 0..4>`; C1 status, C2 cells,
  C4 problem flags, C0 device info.
- BMS -> host: fixed 20-byte frames `CC <type> .. <CRC-8/MAXIM over bytes 0..18>`; each request is answered
  by several (C1 -> F0 F2; C2 -> F0 F3 F4..; C4 -> F9; C0 -> F1). Multi-byte values are LE, often 24-bit.

Pure: stdlib and ..codec/..checksums/..fields only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ...checksums import crc8_maxim
from ...codec import (
    BufferedAssembler,
    ChecksumError,
    Frame,
    Reading,
    UnsupportedFrame,
    UsageError,
    ascii_field,
)
from ..decode_util import decode_stream
from ..fields import Field, FieldTable

REQUEST_HEAD: Final = 0xEE
REPLY_HEAD: Final = 0xCC
REQUEST_LEN: Final = 6
REPLY_LEN: Final = 20

CMD_INFO: Final = 0xC0
CMD_STATUS: Final = 0xC1
CMD_CELLS: Final = 0xC2
CMD_PROBLEMS: Final = 0xC4

T_STATUS: Final = 0xF0
T_MODEL: Final = 0xF1
T_MOS: Final = 0xF2
T_HEATER: Final = 0xF3
T_CELLS: Final = 0xF4
T_PROBLEMS: Final = 0xF9
# Replies each request produces; C4's F9 is optional (not every BMS reports it, [aio]).
EXPECTED: Final[Mapping[int, frozenset[int]]] = {
    CMD_INFO: frozenset({T_MODEL}),
    CMD_STATUS: frozenset({T_STATUS, T_MOS}),
    CMD_CELLS: frozenset({T_STATUS, T_HEATER, T_CELLS}),
    CMD_PROBLEMS: frozenset({T_PROBLEMS}),
}

CELLS_PER_FRAME: Final = 4
CELL_SLOT: Final = 4  # [index (1-based, 0 = empty)][u24 LE mV]
MAX_CELLS: Final = 32
MAX_TEMPERATURES: Final = 6  # s16 LE from byte 5 of F2, up to byte 17
PROBLEM_BITS: Final = 16  # F9: bit 0 of bytes 2..17 -> problem bit 0..15


# --- request builders --------------------------------------------------------------------------------

def build_request(command: int) -> bytes:
    if not 0 <= command <= 0xFF:
        raise UsageError(f"SOK command {command} is not a byte")
    body = bytes((REQUEST_HEAD, command, 0, 0, 0))
    return body + bytes((crc8_maxim(body),))


REQUEST_INFO: Final = build_request(CMD_INFO)  # ee c0 00 00 00 41
REQUEST_STATUS: Final = build_request(CMD_STATUS)  # ee c1 00 00 00 ce
REQUEST_CELLS: Final = build_request(CMD_CELLS)  # ee c2 00 00 00 46
REQUEST_PROBLEMS: Final = build_request(CMD_PROBLEMS)  # ee c4 00 00 00 4f


def build_reply(frame_type: int, body: bytes) -> bytes:
    """A 20-byte reply (for emulators): `body` fills bytes 2..18, zero-padded."""
    if len(body) > REPLY_LEN - 3:
        raise UsageError(f"SOK reply body of {len(body)} bytes (max {REPLY_LEN - 3})")
    head = bytes((REPLY_HEAD, frame_type)) + body + bytes(REPLY_LEN - 3 - len(body))
    return head + bytes((crc8_maxim(head),))


# --- frame assembler ---------------------------------------------------------------------------------

class SokAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=type byte, raw=20 bytes) for replies and Frame(kind=cmd byte,
    raw=6 bytes) for host requests (what an emulator receives). Junk before a head byte is dropped and
    reported as FramingError; a bad CRC drops the head byte and raises ChecksumError."""

    NAME = "SOK frame"

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = next((i for i, b in enumerate(buf) if b in (REQUEST_HEAD, REPLY_HEAD)), -1)
        if not self._at_frame_start(start):
            return None
        size = REPLY_LEN if buf[0] == REPLY_HEAD else REQUEST_LEN
        if len(buf) < size:
            return None
        expected, actual = crc8_maxim(bytes(buf[: size - 1])), buf[size - 1]
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "SOK frame")
        raw = bytes(buf[:size])
        del buf[:size]
        return Frame(raw[1], raw)



# --- field tables ------------------------------------------------------------------------------------

STATUS_FIELDS: Final = FieldTable((
    Field("voltage", 2, 3, scale=0.001),
    Field("current", 5, 3, signed=True, scale=0.001),  # + = charging
    Field("design_capacity", 8, 3, scale=0.001),
    Field("charge", 11, 3, scale=0.001),
    Field("cycles", 14, 2),
    Field("soc", 16, 1),
), byteorder="little")
MOS_FIELDS: Final = FieldTable((
    Field("charge_mos", 2, 1),
    Field("discharge_mos", 3, 1),
    Field("temperature_count", 4, 1),
), byteorder="little")
TEMPERATURE: Final = Field("temperature", 5, 2, signed=True)  # repeated every 2 bytes
HEATER: Final = Field("heater", 8, 1)
CELL_INDEX: Final = Field("index", 2, 1)
CELL_MV: Final = Field("mv", 3, 3)  # at + 4n


def _check(raw: bytes, frame_type: int) -> None:
    if len(raw) != REPLY_LEN or raw[0] != REPLY_HEAD or raw[1] != frame_type:
        raise UnsupportedFrame(f"not a SOK {frame_type:#04x} frame: {raw[:2].hex()}, {len(raw)} bytes")


def decode_status(raw: bytes) -> Reading:
    _check(raw, T_STATUS)
    return dict(STATUS_FIELDS.decode(raw))


def decode_mos(raw: bytes) -> Reading:
    _check(raw, T_MOS)
    v = MOS_FIELDS.decode(raw)
    count = min(int(v["temperature_count"]), MAX_TEMPERATURES)
    temps = [TEMPERATURE.convert(TEMPERATURE.raw(raw, "little", 2 * i)) for i in range(count)]
    return {"temperatures": temps, "switches": {"charge": bool(v["charge_mos"]), "discharge": bool(v["discharge_mos"])}}


def decode_heater(raw: bytes) -> Reading:
    _check(raw, T_HEATER)
    return {"switches": {"heater": bool(HEATER.raw(raw, "little"))}}


def decode_cells(raw: bytes) -> dict[int, float]:
    """An F4 frame -> {0-based cell index: V}; empty slots (index 0) are skipped."""
    _check(raw, T_CELLS)
    out: dict[int, float] = {}
    for slot in range(CELLS_PER_FRAME):
        index = CELL_INDEX.raw(raw, "little", CELL_SLOT * slot)
        if 0 < index <= MAX_CELLS:
            out[index - 1] = CELL_MV.raw(raw, "little", CELL_SLOT * slot) / 1000
    return out


def problem_bits(raw: bytes) -> int:
    """F9: bit 0 of byte 2+i is problem bit i (the other bits of those bytes are not used, [aio])."""
    _check(raw, T_PROBLEMS)
    return sum((raw[2 + i] & 1) << i for i in range(PROBLEM_BITS))


def decode_model(raw: bytes) -> str:
    _check(raw, T_MODEL)
    return ascii_field(raw[2:-1])


def combine(frames: Iterable[Frame]) -> Reading:
    """A set of reply frames (one poll: C1, C2, C4) -> one Reading. Later frames win; cells are collected
    by their index; cell voltages are returned for 1..N without gaps (a gap ends the list).

    The cell count is not on the wire, so a lost F4 frame would silently shorten the list. Cell voltages
    are left out of the reading when cell 1 is missing, or when their sum falls short of the pack voltage
    by more than half an average cell: an incomplete list is worse than none."""
    reading: Reading = {}
    cells: dict[int, float] = {}
    switches: dict[str, bool] = {}
    for frame in frames:
        raw = frame.raw
        if frame.kind == T_STATUS:
            reading.update(decode_status(raw))
        elif frame.kind == T_MOS:
            part = decode_mos(raw)
            switches.update(part.pop("switches"))
            reading.update(part)
        elif frame.kind == T_HEATER:
            switches.update(decode_heater(raw)["switches"])
        elif frame.kind == T_CELLS:
            cells.update(decode_cells(raw))
        elif frame.kind == T_PROBLEMS:
            reading["problem_code"] = problem_bits(raw)
    if 0 in cells:
        n = next(i for i in range(MAX_CELLS + 1) if i not in cells)
        voltages = [cells[i] for i in range(n)]
        pack = reading.get("voltage")
        if pack is None or pack - sum(voltages) <= 0.5 * sum(voltages) / n:
            reading["cell_voltages"] = voltages
    if switches:
        reading["switches"] = switches
    return reading


def decode_frame(frame: Frame) -> dict[str, Any]:
    """Any frame -> JSON-able dict (`frame_type` = type byte, or the command byte of a request)."""
    raw = frame.raw
    if raw[0] == REQUEST_HEAD:
        return {"frame_type": frame.kind, "request": True}
    if frame.kind == T_CELLS:
        return {"frame_type": T_CELLS, "cells": {str(i + 1): v for i, v in decode_cells(raw).items()}}
    if frame.kind == T_MODEL:
        return {"frame_type": T_MODEL, "model": decode_model(raw)}
    if frame.kind in (T_STATUS, T_MOS, T_HEATER, T_PROBLEMS):
        return {"frame_type": frame.kind, **combine((frame,))}
    raise UnsupportedFrame(f"SOK frame type {frame.kind:#04x}")


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode sok HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = SokAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
