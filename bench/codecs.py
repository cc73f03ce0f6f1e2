#!/usr/bin/env python3
"""Codec throughput: frames decoded per second per protocol (assembler + decode, via ProtocolEntry.decode),
fed with each protocol's own emulator frames in the chunks they arrived in (see _common.py).

    .venv/bin/python bench/codecs.py [--seconds 1.0] [--protocols jk jk_uart ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import capture_seeds  # noqa: E402

from bmsbus.collector.protocols import REGISTRY  # noqa: E402


def measure(name: str, chunks: list[bytes], seconds: float) -> tuple[int, int, float, float]:
    """(frames per pass, bytes per pass, frames/s, MB/s)."""
    decode = REGISTRY[name].decode
    assert decode is not None
    frames = sum(1 for d in decode(chunks) if "error" not in d)
    size = sum(map(len, chunks))
    passes = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        decode(chunks)
        passes += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    return frames, size, frames * passes / elapsed, size * passes / elapsed / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per protocol")
    parser.add_argument("--protocols", nargs="*")
    args = parser.parse_args(argv)
    names = args.protocols or sorted(n for n, e in REGISTRY.items() if e.decode is not None)
    seeds = capture_seeds(names)
    print(f"{'protocol':<18}{'frames/pass':>12}{'bytes/pass':>12}{'frames/s':>12}{'MB/s':>8}")
    for name in names:
        s = seeds[name]
        if not s.chunks:
            print(f"{name:<18}{'-':>12}{'-':>12}{'-':>12}{'-':>8}  no emulator frames ({s.error})")
            continue
        frames, size, fps, mbps = measure(name, s.chunks, args.seconds)
        print(f"{name:<18}{frames:>12}{size:>12}{fps:>12,.0f}{mbps:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
