"""Field tables: the data rows a decoder reads values from (style.md §2).

A row says where a number sits (offset, size, signedness) and how to turn it into a catalog value
(`value = (raw - bias) * scale`). No lambdas: anything that is not "integer, minus a bias, times a
scale" (bitfields, enums, strings) is a named function in the family's codec. Pure and stdlib-only,
so codec modules may import it like `..codec`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ..codec import FramingError

ByteOrder = Literal["big", "little"]


@dataclass(frozen=True, slots=True)
class Field:
    key: str  # a catalog key (or a detail name for `bmsbus decode` output)
    offset: int
    size: int
    signed: bool = False
    scale: float = 1  # 1 with bias 0 keeps the value an int
    bias: int = 0  # subtracted from the raw integer before scaling

    def raw(self, data: bytes | bytearray, byteorder: ByteOrder, base: int = 0) -> int:
        start = base + self.offset
        return int.from_bytes(data[start : start + self.size], byteorder, signed=self.signed)

    def convert(self, raw: int) -> int | float:
        if self.scale == 1:
            return raw - self.bias
        # round away binary noise (0.1 * 5321 = 532.1000000000001) well below any BMS resolution
        return round((raw - self.bias) * self.scale, 6)


@dataclass(frozen=True, slots=True)
class FieldTable:
    rows: tuple[Field, ...]
    byteorder: ByteOrder = "big"

    def __iter__(self) -> Iterator[Field]:
        return iter(self.rows)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(f.key for f in self.rows)

    def end(self, base: int = 0) -> int:
        """The number of bytes `decode` needs."""
        return max((base + f.offset + f.size for f in self.rows), default=0)

    def decode(self, data: bytes | bytearray, base: int = 0) -> dict[str, int | float]:
        if len(data) < self.end(base):
            raise FramingError(f"payload of {len(data)} bytes is too short for its fields ({self.end(base)})")
        return {f.key: f.convert(f.raw(data, self.byteorder, base)) for f in self.rows}


def bits_set(value: int, width: int) -> list[int]:
    """Indices of the set bits of `value`, lowest first, below `width`."""
    return [i for i in range(width) if value >> i & 1]
