"""Victron SmartShunt over BLE GATT: sans-I/O codec. protocols.md §11.

Not a framed protocol: every value is its own characteristic (service 65970000-4bda-4c1e-af4b-551c4cf74769; all
characteristics share the suffix). The codec maps "characteristic + value bytes -> Reading" with a table of
characteristics (size, sign, scale, N/A marker).

To travel over a byte Link (notifications, `bmsbus decode`, the fuzzer) a value is *tagged*: the 4-byte
big-endian UUID prefix, then the value bytes (`6597ed8d d204` = voltage 12.34 V). Values have fixed sizes per
characteristic, so a stream of tagged values is framable. Towards the device, a bare 4-byte tag is a read
request and a tag followed by bytes is a write (see gatt.py).

Pure: stdlib and ..codec only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ...codec import BufferedAssembler, Frame, FramingError, Reading, UnsupportedFrame, UsageError
from ..decode_util import decode_stream

SUFFIX: Final = "-4bda-4c1e-af4b-551c4cf74769"
SERVICE: Final = "65970000" + SUFFIX
TAG_LEN: Final = 4


def uuid_of(prefix: int) -> str:
    return f"{prefix:08x}{SUFFIX}"


def prefix_of(uuid: str) -> int:
    """The 32-bit prefix of a SmartShunt characteristic UUID (full or 8 hex digits)."""
    u = uuid.lower()
    if len(u) not in (8, 8 + len(SUFFIX)) or (len(u) > 8 and not u.endswith(SUFFIX)):
        raise UsageError(f"{uuid!r} is not a SmartShunt characteristic")
    return int(u[:8], 16)


@dataclass(frozen=True, slots=True)
class CharSpec:
    """One characteristic: value layout (LE) and its catalog key. `key` not in the catalog (consumed_ah)
    is a detail the driver turns into catalog values."""

    prefix: int
    key: str
    size: int
    signed: bool
    scale: float
    na: int | None = None  # raw value meaning "not available"

    @property
    def uuid(self) -> str:
        return uuid_of(self.prefix)


VOLTAGE: Final = CharSpec(0x6597ED8D, "voltage", 2, True, 0.01)
CURRENT: Final = CharSpec(0x6597ED8C, "current", 4, True, 0.001)  # + = charging
POWER: Final = CharSpec(0x6597ED8E, "power", 2, True, 1)
CONSUMED: Final = CharSpec(0x6597EEFF, "consumed_ah", 4, True, 0.1, na=0x7FFFFFFF)
SOC: Final = CharSpec(0x65970FFF, "soc", 2, False, 0.01, na=0xFFFF)
KEEPALIVE: Final = CharSpec(0x6597FFFF, "keepalive_ms", 2, False, 1)  # written by the host

VALUES: Final[tuple[CharSpec, ...]] = (VOLTAGE, CURRENT, POWER, CONSUMED, SOC)
BY_PREFIX: Final[Mapping[int, CharSpec]] = {c.prefix: c for c in (*VALUES, KEEPALIVE)}

KEEPALIVE_INTERVAL: Final = 10.0  # s between keep-alive writes ([batmon])
KEEPALIVE_MS: Final = 20000  # the timeout written ([batmon]: 20 4e); other clients write FF FF


def spec_of(characteristic: str | int) -> CharSpec:
    prefix = characteristic if isinstance(characteristic, int) else prefix_of(characteristic)
    try:
        return BY_PREFIX[prefix]
    except KeyError:
        raise UnsupportedFrame(f"unknown SmartShunt characteristic {prefix:08x}") from None


def decode_value(characteristic: str | int, value: bytes) -> dict[str, Any]:
    """One characteristic's value -> {key: SI value}, or {} when the device reports N/A."""
    spec = spec_of(characteristic)
    if len(value) != spec.size:
        raise FramingError(f"{spec.key}: {len(value)} bytes, expected {spec.size}")
    raw = int.from_bytes(value, "little", signed=spec.signed)
    if spec.na is not None and (raw & ((1 << 8 * spec.size) - 1)) == spec.na:
        return {}
    return {spec.key: raw if spec.scale == 1 else round(raw * spec.scale, 6)}


def encode_value(spec: CharSpec, value: float) -> bytes:
    """SI value -> the characteristic's bytes (for emulators and the keep-alive)."""
    raw = round(value / spec.scale)
    bits = 8 * spec.size
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if spec.signed else (0, (1 << bits) - 1)
    return max(lo, min(hi, raw)).to_bytes(spec.size, "little", signed=spec.signed)


def na_value(spec: CharSpec) -> bytes:
    if spec.na is None:
        raise UsageError(f"{spec.key} has no N/A marker")
    return spec.na.to_bytes(spec.size, "little")


def tag(characteristic: CharSpec | int, value: bytes = b"") -> bytes:
    prefix = characteristic.prefix if isinstance(characteristic, CharSpec) else characteristic
    return prefix.to_bytes(TAG_LEN, "big") + value


KEEPALIVE_VALUE: Final = KEEPALIVE_MS.to_bytes(2, "little")  # 20 4e


def to_reading(values: Mapping[str, Any], capacity_ah: float | None = None) -> Reading:
    """Decoded characteristic values -> Reading. Consumed Ah is not a catalog value; with the battery
    capacity configured it gives `charge` (= capacity - consumed) and `capacity`."""
    r: Reading = {k: v for k, v in values.items() if k in ("voltage", "current", "power", "soc")}
    consumed = values.get("consumed_ah")
    if capacity_ah and consumed is not None:
        r["capacity"] = capacity_ah
        r["charge"] = round(max(0.0, capacity_ah - abs(consumed)), 3)
    return r


class TaggedAssembler(BufferedAssembler):
    """A stream of tagged values (4-byte prefix + fixed-size value) -> Frame(kind=prefix, raw=tag+value).
    An unknown prefix drops one byte and raises FramingError."""

    NAME = "tagged value"

    def next_frame(self) -> Frame | None:
        buf = self._buf
        if len(buf) < TAG_LEN:
            if buf and not any(p.to_bytes(TAG_LEN, "big").startswith(bytes(buf)) for p in BY_PREFIX):
                n = len(buf)
                del buf[:n]
                raise FramingError(f"junk: dropped {n} bytes")
            return None
        prefix = int.from_bytes(buf[:TAG_LEN], "big")
        spec = BY_PREFIX.get(prefix)
        if spec is None:
            del buf[:1]
            raise FramingError(f"unknown characteristic tag {prefix:08x}")
        total = TAG_LEN + spec.size
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(prefix, raw)



def decode_frame(frame: Frame) -> dict[str, Any]:
    spec = spec_of(int(frame.kind))
    value = decode_value(spec.prefix, frame.raw[TAG_LEN:])
    return {"frame_type": f"{spec.prefix:08x}", "characteristic": spec.key, **value}


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode victron TAGHEX...`: each chunk is a tagged value (`6597ed8dd204`)."""
    asm = TaggedAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
