"""User tools that need no broker: `bmsbus decode` and `bmsbus simulate`.

- `bmsbus decode PROTOCOL HEX [HEX ...]`: each HEX is one received chunk, in order; prints the protocol's
  decode results (canonical keys, one object per frame, `{"error": ...}` for bad bytes) as JSON.
- `bmsbus simulate PROTOCOL --pty`: serves an emulated BMS on a new pseudo-terminal. The first line on stdout
  is the path of the terminal to open (e.g. /dev/pts/7) as the collector's serial port; it runs until
  SIGINT/SIGTERM. Works for every protocol with a serial link and an emulator; `jk_pb` takes
  `--slaves N [--master]`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from typing import Any

from .emulation.base import CHEMISTRIES, Emulator, PackSimulator, PackState, make_pack


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("decode", help="decode received bytes of a BMS protocol (hex chunks) to JSON",
                       description="Decode the bytes a BMS sent. Each HEX argument is one received chunk "
                                   "(a BLE notification, a serial read), in order; spaces and colons are ignored.")
    p.add_argument("protocol", help="BMS type, e.g. jk, jk_uart, jk_pb")
    p.add_argument("hex", nargs="+", help="received chunk as hex")
    p.set_defaults(func=_decode_command)

    s = sub.add_parser("simulate", help="serve an emulated BMS on a pseudo-terminal (serial protocols)",
                       description="Serve an emulated BMS. With --pty the first stdout line is the terminal "
                                   "path to use as the serial port; stops on Ctrl-C / SIGTERM.")
    s.add_argument("protocol", help="BMS type with a serial link, e.g. jk_uart, jk_pb")
    s.add_argument("--pty", action="store_true", required=True, help="create a pseudo-terminal (required)")
    s.add_argument("--cells", type=int, default=16)
    s.add_argument("--chemistry", choices=CHEMISTRIES, default="lfp")
    s.add_argument("--capacity", type=float, default=100.0, help="Ah")
    s.add_argument("--soc", type=float, default=60.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--static", action="store_true", help="keep the pack state fixed (no simulated current)")
    s.add_argument("--slaves", type=int, default=1, help="jk_pb: packs at addresses 1..N")
    s.add_argument("--master", action="store_true", help="jk_pb: add a polling master at address 0")
    s.set_defaults(func=_simulate_command)


# --- decode ------------------------------------------------------------------------------------------

def parse_hex(text: str) -> bytes:
    cleaned = "".join(ch for ch in text if ch not in " :\t\n-")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    return bytes.fromhex(cleaned)


def decode_chunks(protocol: str, chunks: Sequence[bytes]) -> list[dict[str, Any]]:
    """The REGISTRY entry's decode over the chunks (KeyError for unknown protocols, ValueError without decode)."""
    from .protocols import get

    entry = get(protocol)
    if entry.decode is None:
        raise ValueError(f"protocol {protocol!r} has no decoder")
    return entry.decode(list(chunks))


def _decode_command(args: argparse.Namespace) -> int:
    try:
        chunks = [parse_hex(h) for h in args.hex]
    except ValueError as exc:
        print(f"bmsbus decode: not hex: {exc}", file=sys.stderr)
        return 2
    try:
        result = decode_chunks(args.protocol, chunks)
    except (KeyError, ValueError) as exc:
        print(f"bmsbus decode: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False))
    return 0


# --- simulate ----------------------------------------------------------------------------------------

def build_emulator(protocol: str, *, cells: int = 16, chemistry: str = "lfp", capacity: float = 100.0,
                   soc: float = 60.0, seed: int = 0, slaves: int = 1, master: bool = False) -> Emulator:
    from .protocols import get

    entry = get(protocol)
    if entry.serial is None or entry.emulator is None:
        raise ValueError(f"protocol {protocol!r} has no serial link or no emulator; serial ones with an emulator: "
                         f"{', '.join(serial_protocols())}")
    if protocol == "jk_pb":
        from .protocols.jk.emulator import make_bus

        return make_bus(slaves=slaves, master=master, cells=cells, chemistry=chemistry, seed=seed)
    pack = make_pack(chemistry=chemistry, cells=cells, capacity_ah=capacity, soc=soc, seed=seed,
                     name=f"sim-{protocol}")
    return entry.emulator(pack)


def serial_protocols() -> list[str]:
    from .protocols import REGISTRY

    return sorted(n for n, e in REGISTRY.items() if e.serial is not None and e.emulator is not None)


def pack_states(emulator: Emulator) -> list[PackState]:
    """Every pack an emulator serves (a bus emulator serves several)."""
    slaves = getattr(emulator, "slaves", None)
    if slaves is not None:
        states = [s.state for s in slaves]
        master_state = getattr(emulator, "master_state", None)
        return states + ([master_state] if master_state is not None else [])
    return [emulator.state]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 0.1)
            continue
        view = view[n:]


def serve_fd(fd: int, emulator: Emulator, stop: threading.Event, *, simulate: bool = True,
             tick: float = 0.01, clock: Callable[[], float] = time.time) -> None:
    """Answer what arrives on `fd` with the emulator's replies, and write what it sends on its own, until
    `stop` is set. Blocking (select-based): run it in its own thread or process."""
    sims = [PackSimulator(s, seed=i) for i, s in enumerate(pack_states(emulator))] if simulate else []
    while not stop.is_set():
        readable, _, _ = select.select([fd], [], [], tick)
        now = clock()
        for sim in sims:
            sim.step(now)
        if readable:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: nobody has the other end open right now
                data = b""
                time.sleep(tick)
            for frame in emulator.receive(data) if data else ():
                _write_all(fd, frame)
        for frame in emulator.tick(now):
            _write_all(fd, frame)


def open_pty() -> tuple[int, int, str]:
    """A raw pseudo-terminal: (master fd, slave fd, slave path). Keep the slave fd open while serving."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def _simulate_command(args: argparse.Namespace) -> int:
    try:
        emulator = build_emulator(args.protocol, cells=args.cells, chemistry=args.chemistry,
                                  capacity=args.capacity, soc=args.soc, seed=args.seed, slaves=args.slaves,
                                  master=args.master)
    except (KeyError, ValueError) as exc:
        print(f"bmsbus simulate: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    master, slave, path = open_pty()
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(path, flush=True)
    print(f"serving {args.protocol} on {path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        serve_fd(master, emulator, stop, simulate=not args.static)
    finally:
        os.close(master)
        os.close(slave)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bmsbus.collector.tools decode|simulate ...` (the same as the `bmsbus` subcommands)."""
    parser = argparse.ArgumentParser(prog="bmsbus")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
