"""Shared vocabulary of the sans-I/O protocol codecs.

A codec module imports only the stdlib and this module: no asyncio, no sockets, no clock, no logging
side effects. Each codec has three parts:

- a frame assembler: `feed(chunk)` then `next_frame() -> Frame | None` (None = need more bytes). It
  throws the bad bytes away *before* it raises a CodecError, so the caller counts, logs and calls
  `next_frame()` again to resynchronise. Its buffer is bounded.
- pure decoders: Frame -> Reading (canonical catalog keys, SI units, current + = charging) or DeviceInfo.
- request builders: command -> bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol


class CodecError(Exception):
    """The peer sent bytes we cannot use. Raised only by assemblers and decoders."""


class FramingError(CodecError):
    """Bad header, bad length, truncated frame or buffer overflow."""


class ChecksumError(CodecError):
    def __init__(self, expected: int, actual: int, what: str = "frame") -> None:
        super().__init__(f"{what}: checksum {actual:#x}, expected {expected:#x}")
        self.expected = expected
        self.actual = actual


class UnsupportedFrame(CodecError):
    """A well-formed frame of a type or layout this codec does not decode."""


class UsageError(Exception):
    """We misused a codec API (e.g. asked to write a switch the device lacks). Not the peer's fault."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete, checksum-valid frame. `kind` is the protocol's frame type or register;
    `address` the responder's bus address where the protocol has one."""

    kind: int | str
    raw: bytes
    address: int | None = None


# Canonical values keyed by catalog keys (bmsbus.shared.quantities). Scalars are floats or ints,
# per-cell and per-sensor values are lists, switches a {name: bool} mapping, alarms a list of codes.
Reading = dict[str, Any]


@dataclass(slots=True)
class DeviceInfo:
    manufacturer: str | None = None
    model: str | None = None
    hw_version: str | None = None
    sw_version: str | None = None
    serial: str | None = None
    name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Assembler(Protocol):
    def feed(self, chunk: bytes) -> None: ...
    def next_frame(self) -> Frame | None: ...


class BufferedAssembler:
    """The bounded byte buffer every frame assembler starts from.

    `feed()` appends and, past MAX_PENDING, trims the oldest bytes and counts them in `_overflow`;
    assemblers that report the loss call `_raise_overflow()` first thing in `next_frame()`.
    `_at_frame_start(start)` is the resync step: the bytes before a frame start (all of them when `start`
    is -1) are dropped and reported as FramingError. `finish()` reports bytes left over at the end of an input.
    Subclasses implement `next_frame()` and name their frames in NAME.
    """

    MAX_PENDING: int = 1024
    NAME: str = "frame"
    # False: the assembler bounds its buffer itself in next_frame() (the JK ones keep at most MAX_PENDING
    # once they need more bytes), so feed() never cuts into a frame that is still arriving.
    TRIM_ON_FEED: bool = True

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = 0

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if self.TRIM_ON_FEED and len(self._buf) > self.MAX_PENDING:
            cut = len(self._buf) - self.MAX_PENDING
            del self._buf[:cut]
            self._overflow += cut

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _raise_overflow(self) -> None:
        if self._overflow:
            dropped, self._overflow = self._overflow, 0
            raise FramingError(f"buffer overflow: dropped {dropped} bytes")

    def _drop_junk(self, start: int) -> NoReturn:
        n = len(self._buf) if start < 0 else start
        del self._buf[:n]
        raise FramingError(f"junk: dropped {n} bytes")

    def _at_frame_start(self, start: int) -> bool:
        """Where the next frame starts (`start`, -1: nowhere): True if at 0; False if the buffer is empty;
        otherwise the bytes before it are junk, dropped and reported (FramingError)."""
        if start == 0:
            return True
        if self._buf:
            self._drop_junk(start)
        return False

    def finish(self) -> None:
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise FramingError(f"truncated {self.NAME} at end of input: {n} bytes")


def drain(assembler: Assembler, chunk: bytes = b"") -> Iterator[Frame | CodecError]:
    """Feed a chunk and yield every complete frame, and every CodecError in its place, until the
    assembler needs more bytes."""
    if chunk:
        assembler.feed(chunk)
    while True:
        try:
            frame = assembler.next_frame()
        except CodecError as err:
            yield err
            continue
        if frame is None:
            return
        yield frame


def merge(*readings: Reading) -> Reading:
    """Later readings win; switches are merged rather than replaced."""
    out: Reading = {}
    for r in readings:
        for k, v in r.items():
            if k == "switches" and isinstance(out.get(k), dict):
                out[k] = {**out[k], **v}
            else:
                out[k] = v
    return out


def ascii_field(raw: bytes) -> str:
    """A NUL-padded ASCII field as text (non-printable bytes dropped)."""
    text = raw.split(b"\x00", 1)[0].decode("ascii", errors="ignore")
    return "".join(ch for ch in text if ch.isprintable()).strip()
