"""Durable aggregator state: a snapshot plus a journal of the inputs since the snapshot.

    <state_dir>/aggregator-state.json   snapshot, replaced atomically (write tmp, fsync, rename, fsync dir)
    <state_dir>/journal-<gen>.log       every input that changed state since that snapshot, one per line:
                                          S <arrival unix time> <sample JSON>
                                          T <unix time>                      (a tick that released or timed out something)
                                          Q <unix time> <battery> <SettingsRequest JSON>  (applied)
                                          R <unix time> <battery> <MetersReset JSON>      (applied)

The engine is a deterministic function of its inputs, so snapshot + replayed journal = the state at the
moment the process died, to the last bit: a kill -9 loses nothing that was processed. The journal is
appended with one write() per batch (the OS keeps it across a process crash; `fsync_journal` extends that to
power loss at a cost). A snapshot names the first journal generation it does *not* contain, so a crash
between writing a snapshot and deleting old journals never replays an input twice.

A settings change or a meters reset is journaled like a sample (so a replay puts it between the same two
samples) and then the service takes a snapshot at once: a person's change is on disk, atomically, before
it is answered.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("bmsbus.aggregator.store")

SNAPSHOT = "aggregator-state.json"
FORMAT = 1


SETTINGS_REQUEST = "Q"
METERS_RESET = "R"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "S" sample, "T" tick, "Q" settings request, "R" meters reset
    now: float
    payload: bytes = b""
    battery: str = ""  # Q and R: the battery of the topic it came on


def encode_sample(now: float, payload: bytes) -> bytes:
    return b"S %r " % now + payload + b"\n"


def encode_request(kind: str, now: float, battery: str, payload: bytes) -> bytes:
    """A request that was applied; `battery` is a topic id (no spaces), the payload compact JSON."""
    return b"%s %r %s " % (kind.encode(), now, battery.encode()) + payload.replace(b"\n", b" ") + b"\n"


def encode_tick(now: float) -> bytes:
    return b"T %r\n" % now


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateStore:
    def __init__(self, state_dir: Path, *, fsync_journal: bool = False) -> None:
        self.dir = Path(state_dir)
        self.fsync_journal = fsync_journal
        self.generation = 0
        self._journal: int | None = None  # fd of the open journal
        self.journal_bytes = 0

    # -- reading
    def _journals(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.glob("journal-*.log"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def load(self) -> tuple[dict[str, Any] | None, list[Event]]:
        """The last snapshot's engine state (None if there is none) and the inputs journaled after it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        snap_path = self.dir / SNAPSHOT
        engine: dict[str, Any] | None = None
        first_gen = 0
        if snap_path.exists():
            try:
                snap = json.loads(snap_path.read_bytes())
                if snap.get("format") != FORMAT:
                    raise ValueError(f"format {snap.get('format')!r}, expected {FORMAT}")
                engine, first_gen = snap["engine"], int(snap["journal"])
            except (ValueError, KeyError, TypeError) as exc:
                # Keep the unreadable file for a human; starting from zero beats not starting.
                kept = snap_path.with_name(snap_path.name + ".unreadable")
                os.replace(snap_path, kept)
                log.error("state snapshot %s unreadable (%s); kept as %s, meters start from zero", snap_path,
                          exc, kept.name)
        events: list[Event] = []
        journals = self._journals()
        for gen, path in journals:
            if gen >= first_gen:
                events.extend(self._read_journal(path))
        self.generation = max([first_gen, *(g + 1 for g, _ in journals)])
        return engine, events

    @staticmethod
    def _read_journal(path: Path) -> Iterator[Event]:
        data = path.read_bytes()
        lines = data.split(b"\n")
        # The last piece has no newline: a write the process did not finish. It was never acted on.
        for line in lines[:-1]:
            try:
                kind, rest = line[:1].decode(), line[2:]
                if kind == "S":
                    now, payload = rest.split(b" ", 1)
                    yield Event("S", float(now), payload)
                elif kind == "T":
                    yield Event("T", float(rest))
                elif kind in (SETTINGS_REQUEST, METERS_RESET):
                    now, battery, payload = rest.split(b" ", 2)
                    yield Event(kind, float(now), payload, battery.decode())
            except ValueError:
                log.warning("skipped an unreadable journal line in %s", path.name)

    # -- writing
    def _open_journal(self) -> None:
        path = self.dir / f"journal-{self.generation:08d}.log"
        self._journal = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.journal_bytes = 0

    def append(self, data: bytes) -> None:
        if not data:
            return
        if self._journal is None:
            self._open_journal()
        assert self._journal is not None
        view = memoryview(data)
        while view:
            n = os.write(self._journal, view)
            view = view[n:]
        self.journal_bytes += len(data)
        if self.fsync_journal:
            os.fsync(self._journal)

    def snapshot(self, engine: dict[str, Any]) -> None:
        """Write `engine` (which includes every journaled input) and start a fresh journal."""
        self.dir.mkdir(parents=True, exist_ok=True)
        next_gen = self.generation + 1
        body = json.dumps({"format": FORMAT, "journal": next_gen, "engine": engine}, separators=(",", ":"))
        _write_atomically(self.dir / SNAPSHOT, body.encode())
        self.close()
        self.generation = next_gen
        for gen, path in self._journals():
            if gen < next_gen:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
