"""Modbus RTU framing shared by every family that speaks it (Daly D2 over BLE, ...).

Sans-I/O like every codec: an assembler for the replies a host receives (read 0x03/0x04 with a
byte count, write echoes 0x05/0x06/0x0F/0x10 of 8 bytes, exception replies of 5 bytes), request
builders, and a request parser for emulators. CRC-16/MODBUS, appended low byte first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..checksums import crc16_modbus
from ..codec import BufferedAssembler, ChecksumError, FramingError, Frame, UnsupportedFrame

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
_READS = frozenset({READ_HOLDING, READ_INPUT})
_FIXED_8 = frozenset({0x05, WRITE_SINGLE, 0x0F, WRITE_MULTIPLE})


def _crc_ok(frame: bytes | bytearray) -> tuple[int, int]:
    expected = crc16_modbus(bytes(frame[:-2]))
    actual = int.from_bytes(frame[-2:], "little")
    return expected, actual


def with_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


def read_request(address: int, register: int, count: int, function: int = READ_HOLDING) -> bytes:
    return with_crc(bytes([address, function]) + register.to_bytes(2, "big") + count.to_bytes(2, "big"))


def write_single_request(address: int, register: int, value: int) -> bytes:
    return with_crc(bytes([address, WRITE_SINGLE]) + register.to_bytes(2, "big") + (value & 0xFFFF).to_bytes(2, "big"))


def read_reply(address: int, data: bytes, function: int = READ_HOLDING) -> bytes:
    """A read reply (for emulators): address, function, byte count, data, CRC."""
    return with_crc(bytes([address, function, len(data)]) + data)


def exception_reply(address: int, function: int, code: int) -> bytes:
    return with_crc(bytes([address, function | 0x80, code]))


def registers(frame: Frame) -> bytes:
    """The data bytes of a read reply."""
    if frame.kind not in _READS:
        raise UnsupportedFrame(f"Modbus function {frame.kind:#04x} carries no register data")
    return frame.raw[3:-2]


def exception_code(frame: Frame) -> int | None:
    return frame.raw[2] if isinstance(frame.kind, int) and frame.kind & 0x80 else None


class ModbusRtuAssembler(BufferedAssembler):
    """Replies from the given responder addresses. Bytes that cannot start one are junk."""


    def __init__(self, addresses: Iterable[int]) -> None:
        super().__init__()
        self.addresses = frozenset(addresses)

    def _length(self) -> int | None:
        """Total length of the frame at the buffer head, None if not known yet."""
        buf = self._buf
        if len(buf) < 2:
            return None
        function = buf[1]
        if function & 0x80:
            return 5
        if function in _READS:
            return 5 + buf[2] if len(buf) >= 3 else None
        if function in _FIXED_8:
            return 8
        del buf[:1]
        raise FramingError(f"Modbus function {function:#04x} unknown")

    def next_frame(self) -> Frame | None:
        buf = self._buf
        self._raise_overflow()
        start = next((i for i, b in enumerate(buf) if b in self.addresses), -1)
        if not self._at_frame_start(start):
            return None
        total = self._length()
        if total is None or len(buf) < total:
            return None
        expected, actual = _crc_ok(buf[:total])
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "Modbus reply")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(kind=raw[1], raw=raw, address=raw[0])


@dataclass(frozen=True, slots=True)
class Request:
    address: int
    function: int
    register: int
    value: int  # register count for reads, the value for a single write


class RequestParser:
    """Host requests (8-byte read / single-write frames), for emulators. Bad bytes are skipped."""

    def __init__(self, addresses: Iterable[int]) -> None:
        self.addresses = frozenset(addresses)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Request]:
        self._buf += data
        out: list[Request] = []
        buf = self._buf
        while len(buf) >= 8:
            if buf[0] not in self.addresses or buf[1] not in (READ_HOLDING, READ_INPUT, WRITE_SINGLE):
                del buf[:1]
                continue
            expected, actual = _crc_ok(buf[:8])
            if expected != actual:
                del buf[:1]
                continue
            out.append(Request(buf[0], buf[1], int.from_bytes(buf[2:4], "big"), int.from_bytes(buf[4:6], "big")))
            del buf[:8]
        if len(buf) > 64:
            del buf[:-8]
        return out
