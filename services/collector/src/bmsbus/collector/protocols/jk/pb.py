"""JK-PB (inverter BMS) internal RS485 network: sans-I/O bus codec. protocols.md §3.

On the RS485-2 port (115200 8N1) of a JK-PB pack network, the BMS at DIP address 0 is the bus master. It polls
each slave with an 11-byte Modbus FC10 "trigger" write (`[addr] 10 16 XX 00 01 02 00 00 CRC`, XX = 0x20 cell
info, 0x1E settings, 0x1C device info); the slave answers with the same 300-byte `55 AA EB 90` frame as BLE
JK02_32S, followed by the 8-byte FC10 ACK `[addr] 10 16 XX 00 01 CRC`. The 300-byte frame carries no address:
the ACK's byte 0 (raw[300]) names the responder; a settings frame also holds DevAddr at byte 270. The master
also broadcasts its own cell info and settings (no request, no ACK) once per ≈4.4 s cycle.

`JkPbBusCodec` listens to everything on the bus (`feed(chunk, now)`), attributes each 300-byte frame to its
pack, and decides when to talk (`poll(now) -> request | None`):

- **sniff** while a real master is polling (any foreign trigger request seen in the last `master_timeout`
  seconds). With `identify=True` it slips a device-info request into an idle gap (≥ `idle_gap`) now and then
  for packs whose name it does not know yet (the master never asks for device info).
- **master** when no master has been heard for `master_timeout` (default 2 s) and the bus has been idle for
  `idle_gap` (250 ms): it polls every configured address itself (device info first, then cell info every
  `cell_interval`, settings every `settings_interval`), one request at a time. It goes back to sniffing as
  soon as a foreign master request appears.

The codec never reads a clock: every call takes `now` (seconds, monotonic). It yields `PackFrame` events
(`next_event()`); `pack(address)` holds the latest frames of each pack, `reading(address)` merges them.
Packs are identified by their device name (device info), not by their address: see `PackView.name`.
The asyncio side (JkPbBus, JkPbDriver) is in driver.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ...checksums import crc16_modbus, sum8
from ...codec import (BufferedAssembler, ChecksumError, DeviceInfo, Frame, FramingError, Reading, UnsupportedFrame,
                      merge)
from . import ble
from .ble import Layout

REG_DEVICE_INFO: Final = 0x161C
REG_SETTINGS: Final = 0x161E
REG_CELL_INFO: Final = 0x1620
# trigger register -> frame type it makes the slave send
TRIGGER_REGISTERS: Final[dict[int, int]] = {
    REG_DEVICE_INFO: ble.TYPE_DEVICE_INFO, REG_SETTINGS: ble.TYPE_SETTINGS, REG_CELL_INFO: ble.TYPE_CELL_INFO}
REGISTER_OF_TYPE: Final[dict[int, int]] = {v: k for k, v in TRIGGER_REGISTERS.items()}
FC_WRITE_MULTIPLE: Final = 0x10
DEVADDR_OFFSET: Final = 270  # settings frame byte with the DIP address
ASSUMED_SW: Final = "15.0"  # all JK-PB firmware seen is >= 14 (protocols.md §1.6): read sensors T3..T5

KIND_REQUEST: Final = "request"  # FC10 trigger write (master -> slave)
KIND_WRITE: Final = "write"  # any other FC10 write (settings, control bits)
KIND_ACK: Final = "ack"  # FC10 response


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16_modbus(body))


def build_trigger(address: int, register: int) -> bytes:
    """11-byte FC10 write of 0x0000 to one register: the master's poll."""
    return _with_crc(struct.pack(">BBHHBH", address, FC_WRITE_MULTIPLE, register, 1, 2, 0))


def build_ack(address: int, register: int) -> bytes:
    """8-byte FC10 response that follows a slave's 300-byte frame."""
    return _with_crc(struct.pack(">BBHH", address, FC_WRITE_MULTIPLE, register, 1))


# --- assembler ---------------------------------------------------------------------------------------

class JkPbAssembler(BufferedAssembler):
    """Everything on the bus, as frames: 300-byte JK frames (kind = 0x01/0x02/0x03/0x05), FC10 trigger
    requests (kind "request", `address`), other FC10 writes ("write") and FC10 ACKs ("ack").

    0x00 bytes between frames (CH341 adapters pad with them) are dropped silently; other unknown bytes are
    dropped and reported as FramingError. A 300-byte frame with a bad sum8 loses only its header (ChecksumError),
    so Modbus frames after a truncated frame are still found.
    """

    MAX_PENDING: Final = ble.FRAME_LEN + 9 + 64

    TRIM_ON_FEED = False

    def _drop(self, n: int) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        if junk.strip(b"\x00"):
            raise FramingError(f"junk: dropped {len(junk)} bytes ({junk[:16].hex()})")

    def _modbus(self) -> Frame | None | Literal[False]:
        """A Modbus FC10 frame at buffer start: Frame, None (need more bytes) or False (not one)."""
        buf = self._buf
        n = len(buf)
        request_form = n >= 7 and 0 < buf[6] <= 64 and buf[6] == 2 * int.from_bytes(buf[4:6], "big")
        if request_form:
            total = 9 + buf[6]
            if n >= total and crc16_modbus(bytes(buf[: total - 2])) == int.from_bytes(buf[total - 2 : total], "little"):
                raw = bytes(buf[:total])
                del buf[:total]
                register = int.from_bytes(raw[2:4], "big")
                trigger = total == 11 and register in TRIGGER_REGISTERS and raw[7:9] == b"\x00\x00"
                return Frame(KIND_REQUEST if trigger else KIND_WRITE, raw, raw[0])
        if n >= 8 and crc16_modbus(bytes(buf[:6])) == int.from_bytes(buf[6:8], "little"):
            raw = bytes(buf[:8])
            del buf[:8]
            return Frame(KIND_ACK, raw, raw[0])
        if n < 8 or (request_form and n < 9 + buf[6]):
            return None
        return False

    def next_frame(self) -> Frame | None:
        buf = self._buf
        header = ble.RESPONSE_HEADER
        junk = 0
        n = len(buf)
        while junk < n:
            rest = n - junk
            if buf[junk] == 0x55 and (buf[junk : junk + 4] == header or (rest < 4 and header.startswith(
                    bytes(buf[junk:])))):
                if junk:
                    self._drop(junk)
                    junk, n = 0, len(buf)
                    continue
                return self._jk_frame()
            if rest >= 2 and buf[junk + 1] == FC_WRITE_MULTIPLE and buf[junk] <= 247:
                if junk:
                    self._drop(junk)
                    junk, n = 0, len(buf)
                    continue
                found = self._modbus()
                if found is not False:
                    return found
            elif rest == 1 and buf[junk] <= 247:
                break  # may be the address byte of a Modbus frame
            junk += 1
        if junk:
            self._drop(junk)
        return None

    def _jk_frame(self) -> Frame | None:
        buf = self._buf
        if len(buf) < ble.FRAME_LEN:
            return None
        expected, actual = sum8(buf[: ble.FRAME_LEN - 1]), buf[ble.FRAME_LEN - 1]
        if expected != actual:
            del buf[:4]
            raise ChecksumError(expected, actual, "JK-PB frame")
        raw = bytes(buf[: ble.FRAME_LEN])
        del buf[: ble.FRAME_LEN]
        if raw[4] not in ble.FRAME_TYPES:
            raise UnsupportedFrame(f"JK frame type {raw[4]:#04x}")
        return Frame(raw[4], raw)

    def finish(self) -> None:
        rest = bytes(self._buf)
        self._buf.clear()
        if rest.strip(b"\x00"):
            raise FramingError(f"truncated frame or junk at end of input: {len(rest)} bytes")


# --- bus codec ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PackFrame:
    """A 300-byte frame attributed to a pack. `via`: how the address was found (ack / devaddr / request /
    broadcast = the master's own frame, address 0)."""

    address: int
    kind: int
    raw: bytes
    at: float
    via: str


@dataclass(slots=True)
class PackView:
    address: int
    info: DeviceInfo | None = None
    cell_raw: bytes | None = None
    cell_at: float = -math.inf
    settings_raw: bytes | None = None
    settings_at: float = -math.inf
    info_at: float = -math.inf

    @property
    def name(self) -> str | None:
        return self.info.name if self.info is not None else None

    def reading(self) -> Reading:
        if self.cell_raw is None:
            return {}
        sw = self.info.sw_version if self.info is not None and self.info.sw_version else ASSUMED_SW
        cell = ble.decode_cell_info(self.cell_raw, Layout.JK02_32S, sw)
        if self.settings_raw is None:
            return cell
        return merge(cell, ble.decode_settings(self.settings_raw, Layout.JK02_32S).reading())


@dataclass(slots=True)
class _Sent:
    address: int
    register: int
    raw: bytes
    at: float
    ours: bool
    answered: bool = False


@dataclass
class JkPbBusCodec:
    """See the module docstring. `addresses`: the slaves to poll when master (1..15). The codec also learns
    every address it hears answering."""

    addresses: tuple[int, ...] = (1,)
    master_timeout: float = 2.0
    idle_gap: float = 0.25
    response_timeout: float = 0.5  # a request without a complete answer by then is given up
    ack_wait: float = 0.05  # how long a 300-byte frame waits for its ACK before context decides
    request_window: float = 0.15  # a frame this soon after a matching request belongs to its address
    request_gap: float = 0.1  # ≥ 100 ms between our requests ([mm])
    cell_interval: float = 5.0
    settings_interval: float = 30.0
    device_info_interval: float = 3600.0
    device_info_retry: float = 30.0
    identify: bool = True  # in sniff mode, ask unknown packs for device info in idle gaps
    identify_interval: float = 5.0
    mode: str = "sniff"
    packs: dict[int, PackView] = field(default_factory=dict)
    codec_errors: int = 0
    timeouts: int = 0

    def __post_init__(self) -> None:
        self.addresses = tuple(sorted(set(self.addresses)))
        self._asm = JkPbAssembler()
        self._events: list[PackFrame] = []
        self._start: float | None = None
        self.last_master_at = -math.inf
        self.last_rx_at = -math.inf
        self.last_tx_at = -math.inf
        self._last_identify = -math.inf
        self._requests: list[_Sent] = []  # recent requests (ours and the master's), newest last
        self._outstanding: _Sent | None = None
        self._pending: tuple[Frame, float] | None = None  # a 300-byte frame waiting for its ACK
        self._due: dict[tuple[int, int], float] = {}
        for a in self.addresses:
            self.packs[a] = PackView(a)

    # --- input ------------------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        if self._start is None:
            self._start = now
            self.last_master_at = now  # listen for a master for master_timeout before taking over

    def feed(self, chunk: bytes, now: float) -> None:
        """Bytes heard on the bus at `now` (including our own requests if the adapter echoes them)."""
        self._begin(now)
        if chunk:
            self.last_rx_at = now
            self._asm.feed(chunk)
        while True:
            try:
                frame = self._asm.next_frame()
            except (FramingError, ChecksumError, UnsupportedFrame):
                self.codec_errors += 1
                continue
            if frame is None:
                break
            self._on_frame(frame, now)
        self._flush(now)

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.kind == KIND_ACK:
            if self._pending is not None:
                pending, at = self._pending
                self._pending = None
                self._attribute(pending, frame.address or 0, at, "ack")
            return
        self._flush(now, force=True)
        if frame.kind == KIND_REQUEST:
            register = int.from_bytes(frame.raw[2:4], "big")
            ours = any(s.ours and s.raw == frame.raw and now - s.at < self.response_timeout for s in self._requests)
            if not ours:  # a real master is polling
                self.last_master_at = now
                if self.mode == "master":
                    self.mode = "sniff"
                    self._outstanding = None
                self._remember(_Sent(frame.address or 0, register, frame.raw, now, ours=False))
            return
        if frame.kind == KIND_WRITE:
            return
        if isinstance(frame.kind, int) and frame.kind in REGISTER_OF_TYPE:
            self._pending = (frame, now)

    def _remember(self, sent: _Sent) -> None:
        self._requests.append(sent)
        del self._requests[:-8]

    def _flush(self, now: float, *, force: bool = False) -> None:
        """Attribute a 300-byte frame whose ACK did not come (in time) from context."""
        if self._pending is None:
            return
        frame, at = self._pending
        if not force and now - at < self.ack_wait:
            return
        self._pending = None
        if frame.kind == ble.TYPE_SETTINGS:
            self._attribute(frame, frame.raw[DEVADDR_OFFSET], at, "devaddr")
            return
        register = REGISTER_OF_TYPE[int(frame.kind)]
        for sent in reversed(self._requests):
            if not sent.answered and sent.register == register and 0 <= at - sent.at <= self.request_window:
                self._attribute(frame, sent.address, at, "request")
                return
        self._attribute(frame, 0, at, "broadcast")

    def _attribute(self, frame: Frame, address: int, at: float, via: str) -> None:
        kind = int(frame.kind)
        for sent in reversed(self._requests):
            if sent.address == address and TRIGGER_REGISTERS.get(sent.register) == kind and not sent.answered:
                sent.answered = True
                break
        if self._outstanding is not None and self._outstanding.address == address and (
                TRIGGER_REGISTERS[self._outstanding.register] == kind):
            self._outstanding = None
        pack = self.packs.setdefault(address, PackView(address))
        if kind == ble.TYPE_CELL_INFO:
            pack.cell_raw, pack.cell_at = frame.raw, at
        elif kind == ble.TYPE_SETTINGS:
            pack.settings_raw, pack.settings_at = frame.raw, at
        elif kind == ble.TYPE_DEVICE_INFO:
            pack.info, pack.info_at = ble.decode_device_info(frame.raw), at
        self._events.append(PackFrame(address, kind, frame.raw, at, via))

    def next_event(self) -> PackFrame | None:
        return self._events.pop(0) if self._events else None

    # --- output -----------------------------------------------------------------------------------

    def _known_addresses(self) -> list[int]:
        return sorted(set(self.addresses) | {a for a in self.packs if a != 0})

    def _update_mode(self, now: float) -> None:
        if (self.mode == "sniff" and now - self.last_master_at >= self.master_timeout
                and now - self.last_rx_at >= self.idle_gap):
            self.mode = "master"
            self._due.clear()

    def _next_due(self, now: float) -> tuple[int, int] | None:
        """The most overdue (address, register); device info first for a pack we have never heard."""
        best: tuple[float, int, int] | None = None
        for address in self._known_addresses():
            for register in (REG_DEVICE_INFO, REG_CELL_INFO, REG_SETTINGS):
                due = self._due.get((address, register), -math.inf)
                if due <= now and (best is None or due < best[0]):
                    best = (due, address, register)
        return (best[1], best[2]) if best else None

    def _interval(self, address: int, register: int) -> float:
        pack = self.packs.get(address)
        if register == REG_DEVICE_INFO:
            return self.device_info_interval if pack is not None and pack.info else self.device_info_retry
        return self.cell_interval if register == REG_CELL_INFO else self.settings_interval

    def _send(self, address: int, register: int, now: float) -> bytes:
        raw = build_trigger(address, register)
        sent = _Sent(address, register, raw, now, ours=True)
        self._remember(sent)
        self._outstanding = sent
        self.last_tx_at = now
        self._due[(address, register)] = now + self._interval(address, register)
        return raw

    def poll(self, now: float) -> bytes | None:
        """The request to write now, if any (we are master, or identifying a pack in an idle gap)."""
        self._begin(now)
        self._flush(now)
        self._update_mode(now)
        if self._outstanding is not None:
            if now - self._outstanding.at < self.response_timeout:
                return None
            self.timeouts += 1
            self._outstanding = None
        if now - max(self.last_rx_at, self.last_tx_at) < self.request_gap:
            return None
        if self.mode == "master":
            pick = self._next_due(now)
            return self._send(*pick, now) if pick else None
        if self.identify and now - self.last_rx_at >= self.idle_gap and now - self._last_identify >= (
                self.identify_interval):
            for address in self._known_addresses():
                pack = self.packs.get(address)
                if (pack is None or pack.info is None) and self._due.get((address, REG_DEVICE_INFO), -1) <= now:
                    self._last_identify = now
                    return self._send(address, REG_DEVICE_INFO, now)
        return None

    def reading(self, address: int) -> Reading:
        pack = self.packs.get(address)
        return pack.reading() if pack is not None else {}


# --- `bmsbus decode jk_pb` ----------------------------------------------------------------------------

def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """Every bus frame, in order; a 300-byte frame gets the address of the ACK that follows it (or DevAddr
    for settings)."""
    asm = JkPbAssembler()
    out: list[dict[str, Any]] = []
    sw: str | None = None
    last_jk: dict[str, Any] | None = None

    def one(frame: Frame) -> None:
        nonlocal sw, last_jk
        if frame.kind in (KIND_REQUEST, KIND_WRITE, KIND_ACK):
            item: dict[str, Any] = {"frame_type": frame.kind, "address": frame.address,
                                    "register": int.from_bytes(frame.raw[2:4], "big")}
            if frame.kind == KIND_WRITE:
                item["data"] = frame.raw[7:-2].hex()
            if frame.kind == KIND_ACK and last_jk is not None and "address" not in last_jk:
                last_jk["address"] = frame.address
            last_jk = None
            out.append(item)
            return
        raw = frame.raw
        item = {"frame_type": frame.kind, "counter": raw[5]}
        if frame.kind == ble.TYPE_DEVICE_INFO:
            info = ble.decode_device_info(raw)
            sw = info.sw_version or sw
            item |= ble.device_info_dict(info)
        elif frame.kind == ble.TYPE_CELL_INFO:
            item |= ble.decode_cell_info(raw, Layout.JK02_32S, sw or ASSUMED_SW)
        elif frame.kind == ble.TYPE_SETTINGS:
            s = ble.decode_settings(raw, Layout.JK02_32S)
            item |= {**s.reading(), "settings": s.values, "flags": s.flags}
        else:
            item["entries"] = [{"ts": ts, "code": code} for ts, code in ble.decode_logbook(raw)]
        out.append(item)
        last_jk = item

    for chunk in chunks:
        if chunk:
            asm.feed(bytes(chunk))
        while True:
            try:
                frame = asm.next_frame()
            except (FramingError, ChecksumError, UnsupportedFrame) as err:
                out.append({"error": f"{type(err).__name__}: {err}"})
                last_jk = None
                continue
            if frame is None:
                break
            one(frame)
    try:
        asm.finish()
    except FramingError as err:
        out.append({"error": f"{type(err).__name__}: {err}"})
    for item in out:
        if item.get("frame_type") == ble.TYPE_SETTINGS and "address" not in item:
            item["address"] = item["settings"].get("device_address")
    return out
