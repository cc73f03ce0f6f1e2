#!/usr/bin/env python3
"""Fuzz every protocol's `decode` (ProtocolEntry.decode): nothing but CodecError may escape, and every result
must be JSON without NaN.

    .venv/bin/python bench/fuzz_codecs.py                      # 1,000,000 inputs per protocol
    .venv/bin/python bench/fuzz_codecs.py --count 100000 --protocols jk jk_uart --jobs 2

Inputs: the protocol's own emulator frames (captured through its driver, see _common.py) mutated (bit flips,
byte changes, inserted/deleted/duplicated ranges, truncation, splices, frames repeated), then cut into random
chunk sizes; one input in eight is plain random bytes, one in eight intact frames with junk spliced in. Prints a per-protocol table; exits 1 if anything escaped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Seeds, capture_seeds  # noqa: E402

from bmsbus.collector.codec import CodecError  # noqa: E402
from bmsbus.collector.protocols import REGISTRY  # noqa: E402


@dataclass
class FuzzResult:
    protocol: str
    inputs: int = 0
    escaped: int = 0  # exceptions other than CodecError
    bad_output: int = 0  # not a list of JSON-able dicts
    codec_errors: int = 0  # CodecErrors raised by decode (allowed, but decode should report them as dicts)
    error_dicts: int = 0
    frames: int = 0
    seconds: float = 0.0
    seeds: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.escaped or self.bad_output)


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        op = rng.randrange(9)
        n = len(data)
        if op == 0 and n:  # bit flip
            i = rng.randrange(n)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # byte set (interesting values)
            data[rng.randrange(n)] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x55, 0xAA, 0x4E, 0x57, rng.randrange(256)))
        elif op == 2:  # insert random bytes
            i = rng.randrange(n + 1)
            data[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 3 and n:  # delete a range
            i = rng.randrange(n)
            del data[i : i + rng.randrange(1, 32)]
        elif op == 4 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 64))
            data[j:j] = bytes(data[i:j])
        elif op == 5 and n:  # truncate
            del data[rng.randrange(n) :]
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            if other:
                i = rng.randrange(len(other))
                data += other[i : i + rng.randrange(1, 400)]
        elif op == 7:  # repeat the whole thing
            data += bytes(data)
        elif op == 8 and n >= 2:  # swap two bytes
            i, j = rng.randrange(n), rng.randrange(n)
            data[i], data[j] = data[j], data[i]
    return bytes(data[:4096])


def chunked(rng: random.Random, data: bytes) -> list[bytes]:
    mode = rng.randrange(4)
    if mode == 0:
        return [data]
    size = {1: 1, 2: 20}.get(mode, 0)
    out, i = [], 0
    while i < len(data):
        step = size or rng.randrange(1, 128)
        out.append(data[i : i + step])
        i += step
    return out


def _check(result: FuzzResult, out: object) -> None:
    if not isinstance(out, list) or not all(isinstance(d, dict) for d in out):
        raise TypeError(f"decode returned {type(out).__name__}, not a list of dicts")
    json.dumps(out, allow_nan=False)
    for d in out:
        if "error" in d:
            result.error_dicts += 1
        else:
            result.frames += 1


def fuzz_protocol(name: str, count: int, seed: int = 0, seeds: Seeds | None = None,
                  max_examples: int = 3) -> FuzzResult:
    entry = REGISTRY[name]
    assert entry.decode is not None
    if seeds is None:
        seeds = capture_seeds([name])[name]
    # one seed per chunk-boundary-free stream, plus each chunk alone
    pool = [s for s in [seeds.stream, *seeds.chunks] if s]
    result = FuzzResult(name, seeds=len(pool))
    rng = random.Random(f"{seed}:{name}")
    start = time.perf_counter()
    for _ in range(count):
        roll = rng.randrange(8)
        if not pool or roll == 0:
            chunks = [rng.randbytes(rng.randrange(0, 96)) for _ in range(rng.randrange(1, 5))]
        elif roll == 1:  # intact frames, cut anywhere, with junk around them: the resync paths
            data = rng.choice(pool)
            cut = rng.randrange(len(data) + 1)
            chunks = chunked(rng, rng.randbytes(rng.randrange(8)) + data[:cut] + rng.randbytes(rng.randrange(4))
                             + data[cut:])
        else:
            chunks = chunked(rng, mutate(rng, pool))
        result.inputs += 1
        try:
            out = entry.decode(chunks)
        except CodecError:
            result.codec_errors += 1
            continue
        except Exception:  # noqa: BLE001 - this is what we are looking for
            result.escaped += 1
            if len(result.examples) < max_examples:
                result.examples.append(f"{traceback.format_exc(limit=3)}input: {[c.hex() for c in chunks]}")
            continue
        try:
            _check(result, out)
        except (TypeError, ValueError) as exc:
            result.bad_output += 1
            if len(result.examples) < max_examples:
                result.examples.append(f"bad output ({exc}); input: {[c.hex() for c in chunks]}")
    result.seconds = time.perf_counter() - start
    return result


def _worker(args: tuple[str, int, int, Seeds]) -> FuzzResult:
    name, count, seed, seeds = args
    return fuzz_protocol(name, count, seed, seeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs per protocol")
    parser.add_argument("--protocols", nargs="*", help="default: every protocol with a decode function")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--slices", type=int, default=0, help="work units per protocol (default: jobs)")
    args = parser.parse_args(argv)
    names = args.protocols or sorted(n for n, e in REGISTRY.items() if e.decode is not None)
    unknown = [n for n in names if n not in REGISTRY or REGISTRY[n].decode is None]
    if unknown:
        parser.error(f"no decode function: {', '.join(unknown)}")
    all_seeds = capture_seeds(names)
    slices = max(1, args.slices or args.jobs)
    work = [(n, args.count // slices + (1 if i < args.count % slices else 0), args.seed * 1000 + i, all_seeds[n])
            for n in names for i in range(slices)]
    start = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            parts = pool.map(_worker, work, chunksize=1)
    else:
        parts = [_worker(w) for w in work]
    totals: dict[str, FuzzResult] = {}
    for part in parts:
        t = totals.setdefault(part.protocol, FuzzResult(part.protocol, seeds=part.seeds))
        for f in ("inputs", "escaped", "bad_output", "codec_errors", "error_dicts", "frames", "seconds"):
            setattr(t, f, getattr(t, f) + getattr(part, f))
        t.examples += part.examples[: max(0, 3 - len(t.examples))]
    print(f"{'protocol':<18}{'inputs':>10}{'escaped':>9}{'bad out':>9}{'frames':>11}{'errors':>11}"
          f"{'seeds':>7}{'cpu s':>8}  seed capture")
    for name in names:
        t = totals[name]
        note = all_seeds[name].error or "ok"
        print(f"{name:<18}{t.inputs:>10}{t.escaped:>9}{t.bad_output:>9}{t.frames:>11}{t.error_dicts:>11}"
              f"{t.seeds:>7}{t.seconds:>8.1f}  {note}")
    print(f"wall time {time.perf_counter() - start:.1f} s, {args.jobs} jobs")
    failed = [t for t in totals.values() if t.failed]
    for t in failed:
        print(f"\n{t.protocol}: {t.escaped} escaped, {t.bad_output} bad outputs; examples:")
        for ex in t.examples:
            print(ex)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
