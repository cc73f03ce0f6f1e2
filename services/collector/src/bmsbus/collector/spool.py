"""A bounded, append-only on-disk queue of (topic, payload) records: samples wait here while the broker
is unreachable, survive a collector restart, and are read back in the order they were written.

Layout of `spool_dir`:

- `0000000001.seg`, `0000000002.seg`, ... — segment files, written in number order, each a sequence of
  records. A new segment starts when the current one reaches `segment_bytes`, and on every open (so a
  torn tail left by a power cut is never appended to).
- `cursor` — "<segment> <offset> <crc32>": where the oldest unsent record starts. Written (tmp + rename)
  at most once a second while replaying and on close. A stale cursor only means some records are sent
  again — consumers dedupe by (boot, seq) — never that one is skipped. A cursor that fails its CRC, or
  names a segment that cannot be right, is ignored: everything on disk is replayed.
- `lock` — flock'ed while a collector uses the directory, so two collectors cannot interleave records.

A record is `MAGIC(2) | body length u32 LE | crc32(length + body) u32 LE | body`, where body is
`topic length u16 LE | topic | payload`. A torn write (power cut mid-record), a zeroed tail or a flipped
bit fails the length or CRC check: the bad region is counted once in `corrupt_records`, logged, and
reading resumes at the next position where MAGIC starts a record with a valid CRC.

The total size of all segments is bounded by `max_bytes`: to make room, the oldest segment is deleted
and its unsent records are counted in `dropped_oldest`. Segments are `max_bytes // 8` (at most 1 MiB),
so a drop loses at most about an eighth of the spool.

All methods are synchronous and meant to be called from one thread (the event loop); a record is
written with one `os.write`, so the reader never sees half of a record this process wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bmsbus.collector.spool")

MAGIC = b"\xb5\x5b"
_HEADER = struct.Struct("<2sII")  # magic, body length, crc32 over (length bytes + body)
_TOPIC_LEN = struct.Struct("<H")
MAX_BODY = 4 * 1024 * 1024  # a sample is ~1-2 KB; anything claiming more is corruption, not data
_SEGMENT_NAME = re.compile(r"^(\d{10,})\.seg$")


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, locked by another collector, ...)."""


def encode_record(topic: str, payload: bytes) -> bytes:
    topic_bytes = topic.encode()
    body = _TOPIC_LEN.pack(len(topic_bytes)) + topic_bytes + payload
    length = struct.pack("<I", len(body))
    return MAGIC + length + struct.pack("<I", zlib.crc32(length + body)) + body


def _record_at(data: bytes | memoryview, pos: int) -> tuple[str, bytes, int] | None:
    """(topic, payload, end) when a whole valid record starts at `pos`, else None."""
    if len(data) - pos < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC or length > MAX_BODY or length < _TOPIC_LEN.size:
        return None
    start = pos + _HEADER.size
    end = start + length
    if end > len(data):
        return None
    body = bytes(data[start:end])
    if zlib.crc32(body, zlib.crc32(data[pos + 2:pos + 6])) != crc:  # == crc32(length bytes + body)
        return None
    (topic_len,) = _TOPIC_LEN.unpack_from(body, 0)
    if _TOPIC_LEN.size + topic_len > len(body):
        return None
    try:
        topic = body[_TOPIC_LEN.size:_TOPIC_LEN.size + topic_len].decode()
    except UnicodeDecodeError:
        return None
    return topic, body[_TOPIC_LEN.size + topic_len:], end


@dataclass(slots=True)
class ParsedRecord:
    topic: str
    payload: bytes
    start: int  # offsets within the segment file
    end: int


def parse_records(data: bytes, base: int = 0) -> tuple[list[ParsedRecord], int]:
    """Every valid record in `data` (which starts at file offset `base`), and how many corrupt regions
    were skipped. A corrupt region is any run of bytes that is not a valid record: it ends where MAGIC
    next starts a valid record, or at the end of `data` (a torn tail)."""
    records: list[ParsedRecord] = []
    corrupt = 0
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        found = _record_at(view, pos)
        if found is not None:
            topic, payload, end = found
            records.append(ParsedRecord(topic, payload, base + pos, base + end))
            pos = end
            continue
        corrupt += 1
        # Resynchronise: the next MAGIC that starts a record whose CRC checks out.
        nxt = data.find(MAGIC, pos + 1)
        while nxt != -1 and _record_at(view, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        pos = len(data) if nxt == -1 else nxt
    return records, corrupt


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    size: int = 0       # bytes in the file
    records: int = 0    # valid records in the file
    checked: bool = False  # parsed (and its corrupt regions counted) when the spool was opened


@dataclass(slots=True)
class SpooledRecord:
    topic: str
    payload: bytes
    end: int  # file offset just past this record: the cursor once it is acknowledged


class Spool:
    """See the module docstring. Counters (read them, never write them):

    - `spooled`: records written to disk by this process
    - `replayed`: spooled records read back and acknowledged (published) by this process
    - `dropped_oldest`: unsent records deleted to stay within `max_bytes` (plus records too large to fit)
    - `corrupt_records`: corrupt or torn regions skipped (each run of bad bytes counts once)
    - `write_errors`: appends that failed (disk full, I/O error); the caller keeps those records in memory
    - `bytes_on_disk`: current total size of the segment files
    - `pending_records`: records on disk not yet acknowledged
    """

    CURSOR_EVERY = 1.0  # s; how stale the persisted cursor may get while replaying
    # fsync policy. Records are written to the page cache at once (the reader and a restarted process see
    # them), but forced to the card at most every SYNC_EVERY seconds, on segment rotation and on close.
    # fsync per record would make each sample a flash program/erase cycle plus a journal commit — it
    # wears SD cards and can stall the event loop for tens of ms each time. The price: a power cut (not a
    # crash: the kernel still has the data) can lose up to SYNC_EVERY s of samples spooled during an
    # outage; the torn tail is then detected by the CRC and skipped.
    SYNC_EVERY = 2.0

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(1 << 20, max(4096, max_bytes // 8))
        self.spooled = 0
        self.replayed = 0
        self.dropped_oldest = 0
        self.corrupt_records = 0
        self.write_errors = 0
        self.bytes_on_disk = 0
        self.pending_records = 0
        self._segments: deque[_Segment] = deque()  # oldest first; the last may be the write segment
        self._write: _Segment | None = None
        self._write_fd: int | None = None
        self._next_number = 1
        self._unsynced = False
        self._last_sync = time.monotonic()
        # reader: the oldest segment is the one being read
        self._read_off = 0          # acknowledged position in the oldest segment
        self._read_consumed = 0     # acknowledged records in the oldest segment
        self._parsed_off = 0        # how far the oldest segment has been parsed into _ahead
        self._ahead: deque[SpooledRecord] = deque()
        self._cursor_dirty = False
        self._last_cursor_write = 0.0
        self._lock_fd: int | None = None
        self._open()

    # -- opening
    def _open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.dir} is not usable: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(f"spool directory {self.dir} is in use by another process") from exc
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "cursor.tmp").unlink()
        cursor = self._read_cursor()
        numbers = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEGMENT_NAME.match(p.name)))
        if cursor and numbers and cursor[0] > numbers[0] and cursor[0] not in numbers:
            # The cursor only ever names the segment being read, or one already deleted (older than all
            # that remain). Anything else is not ours to trust with deleting segments.
            log.warning("spool: the cursor names segment %d, which is not there; replaying everything", cursor[0])
            cursor = None
        highest = max(numbers + [cursor[0] if cursor else 0])
        self._next_number = highest + 1
        for number in numbers:
            path = self._path(number)
            if cursor and number < cursor[0]:
                # Fully sent before the last cursor write; its deletion just did not happen yet.
                self._unlink(path)
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.error("spool: cannot read %s (%s); skipping it", path.name, exc)
                self.corrupt_records += 1
                continue
            records, corrupt = parse_records(data)
            if corrupt:
                self.corrupt_records += corrupt
                log.warning("spool: %s has %d corrupt or torn region(s); skipped, %d good records kept",
                            path.name, corrupt, len(records))
            segment = _Segment(number, path, len(data), len(records), checked=True)
            if not self._segments and cursor and number == cursor[0]:
                # Resume at the cursor, or at the last record boundary before it if it is not on one
                # (re-sending is harmless; skipping would lose a sample).
                offset = cursor[1]
                done = [r for r in records if r.end <= offset]
                self._read_off = done[-1].end if done else 0
                self._read_consumed = len(done)
                self._parsed_off = self._read_off
            self._segments.append(segment)
            self.bytes_on_disk += segment.size
            self.pending_records += segment.records
        self.pending_records -= self._read_consumed
        if self.pending_records:
            log.info("spool: %d unsent records (%d bytes) from a previous run will be sent first",
                     self.pending_records, self.bytes_on_disk)

    def _read_cursor(self) -> tuple[int, int] | None:
        path = self.dir / "cursor"
        try:
            text = path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("spool: cannot read the cursor (%s); replaying every segment from its start", exc)
            return None
        try:
            number_text, offset_text, crc_text = text.split()
            if int(crc_text, 16) != zlib.crc32(f"{number_text} {offset_text}".encode()):
                raise ValueError("CRC mismatch")
            number, offset = int(number_text), int(offset_text)
            if number < 0 or offset < 0:
                raise ValueError("negative")
        except ValueError:
            log.warning("spool: unreadable cursor %r; replaying every segment from its start", text[:40])
            return None
        return number, offset

    def _path(self, number: int) -> Path:
        return self.dir / f"{number:010d}.seg"

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("spool: cannot delete %s: %s", path.name, exc)

    # -- writing
    def append(self, topic: str, payload: bytes) -> None:
        """Write one record. Raises OSError when the disk refuses it; the spool stays consistent (the
        failed segment is closed and a later append starts a new one)."""
        if self._lock_fd is None:
            raise OSError("the spool is closed")
        record = encode_record(topic, payload)
        if len(record) > self.max_bytes:
            self.dropped_oldest += 1
            log.warning("spool: a %d byte record cannot fit in spool_max_bytes=%d; dropped",
                        len(record), self.max_bytes)
            return
        while self.bytes_on_disk + len(record) > self.max_bytes and self._segments:
            self._drop_oldest()
        try:
            if self._write is None or self._write.size >= self.segment_bytes:
                self._rotate()
        except OSError:
            self.write_errors += 1
            raise
        assert self._write is not None and self._write_fd is not None
        try:
            written = os.write(self._write_fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError:
            self.write_errors += 1
            self._cut_partial_record()
            raise
        self._write.size += len(record)
        self._write.records += 1
        self.bytes_on_disk += len(record)
        self.pending_records += 1
        self.spooled += 1
        self._unsynced = True
        if time.monotonic() - self._last_sync >= self.SYNC_EVERY:
            self.sync()

    def _rotate(self) -> None:
        self._close_write_segment()
        number = self._next_number
        path = self._path(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._next_number += 1
        self._write = _Segment(number, path)
        self._write_fd = fd
        self._segments.append(self._write)
        if len(self._segments) == 1:
            self._read_off = self._parsed_off = self._read_consumed = 0
        self._sync_dir()  # the new file's directory entry must survive a power cut with its data

    def _close_write_segment(self) -> None:
        if self._write_fd is not None:
            try:
                if self._unsynced:
                    os.fsync(self._write_fd)
            except OSError as exc:
                log.warning("spool: fsync of %s failed: %s", self._write.path.name if self._write else "?", exc)
            finally:
                os.close(self._write_fd)
                self._write_fd = None
                self._unsynced = False
                self._last_sync = time.monotonic()
        self._write = None

    def _cut_partial_record(self) -> None:
        """After a failed write: cut off whatever part of the record reached the file. If even that fails,
        stop writing to this segment (its tail is then a torn record, which the reader skips)."""
        assert self._write is not None and self._write_fd is not None
        try:
            os.ftruncate(self._write_fd, self._write.size)
        except OSError:
            self._close_write_segment()

    def sync(self) -> None:
        """Force written records to the card (see SYNC_EVERY)."""
        if self._write_fd is not None and self._unsynced:
            try:
                os.fsync(self._write_fd)
            except OSError as exc:
                self.write_errors += 1
                log.warning("spool: fsync failed: %s", exc)
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _drop_oldest(self) -> None:
        oldest = self._segments[0]
        if oldest is self._write:
            self._close_write_segment()
        lost = oldest.records - self._read_consumed
        self._remove_oldest()
        self.dropped_oldest += lost
        self.pending_records -= lost
        log.warning("spool: full (spool_max_bytes=%d); dropped the oldest %d unsent records (%d in total)",
                    self.max_bytes, lost, self.dropped_oldest)

    def _remove_oldest(self) -> None:
        oldest = self._segments.popleft()
        self._unlink(oldest.path)
        self.bytes_on_disk -= oldest.size
        self._read_off = self._parsed_off = self._read_consumed = 0
        self._ahead.clear()

    # -- reading
    def head(self) -> SpooledRecord | None:
        """The oldest unacknowledged record, or None when everything written has been acknowledged."""
        while not self._ahead:
            if not self._segments:
                return None
            segment = self._segments[0]
            if self._parsed_off < segment.size:
                self._parse_more(segment)
                continue
            if segment is self._write:
                return None  # caught up with the writer
            # Read to the end and every record acknowledged: this segment is done. (records - consumed
            # is 0 unless the file shrank under us; keep the count honest either way.)
            self.pending_records -= segment.records - self._read_consumed
            self._remove_oldest()
            self._cursor_dirty = True
        return self._ahead[0]

    def empty(self) -> bool:
        return self.head() is None

    def _parse_more(self, segment: _Segment) -> None:
        """Parse the rest of the oldest segment, as far as it has been written, into `_ahead`."""
        try:
            with open(segment.path, "rb") as f:
                f.seek(self._parsed_off)
                data = f.read(segment.size - self._parsed_off)
        except OSError as exc:
            log.error("spool: cannot read %s (%s); skipping the rest of it", segment.path.name, exc)
            self.corrupt_records += 1
            data = b""
        records, corrupt = parse_records(data, self._parsed_off)
        if corrupt and not segment.checked:
            # Only possible if the disk changed bytes under a running collector.
            self.corrupt_records += corrupt
            log.warning("spool: %d corrupt region(s) in %s skipped", corrupt, segment.path.name)
        self._ahead.extend(SpooledRecord(r.topic, r.payload, r.end) for r in records)
        self._parsed_off = segment.size  # a short read (file shrank) must not make us parse it forever

    def ack(self) -> None:
        """The record `head()` returned has been delivered; move past it."""
        record = self._ahead.popleft()
        self._read_off = record.end
        self._read_consumed += 1
        self.pending_records -= 1
        self.replayed += 1
        self._cursor_dirty = True
        if self.head() is None:
            self._reset()
        elif time.monotonic() - self._last_cursor_write >= self.CURSOR_EVERY:
            self._write_cursor()

    def _reset(self) -> None:
        """Everything sent: remove the files, so an idle spool costs nothing and replays nothing."""
        self._unsynced = False  # about to be deleted: no point forcing it to the card
        self._close_write_segment()
        # Cursor first: a crash between the two steps leaves segments without a cursor, which replays
        # (duplicates), rather than a cursor that could skip a later segment with the same number.
        with contextlib.suppress(OSError):
            (self.dir / "cursor").unlink(missing_ok=True)
        while self._segments:
            self._remove_oldest()
        self.pending_records = 0
        self._cursor_dirty = False

    def _write_cursor(self) -> None:
        if not self._segments:
            return
        tmp = self.dir / "cursor.tmp"
        try:
            position = f"{self._segments[0].number} {self._read_off}"
            tmp.write_text(f"{position} {zlib.crc32(position.encode()):08x}\n")
            os.replace(tmp, self.dir / "cursor")
        except OSError as exc:
            log.warning("spool: cannot write the cursor: %s", exc)
            return
        self._cursor_dirty = False
        self._last_cursor_write = time.monotonic()

    # -- closing
    def close(self) -> None:
        if self._cursor_dirty:
            self._write_cursor()
        self._close_write_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
