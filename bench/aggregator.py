"""Aggregator throughput: samples/s through one aggregator process fed by a real broker.

    .venv/bin/python bench/aggregator.py [--packs 1000] [--rounds 60] [--group-size 10]

Starts a private Mosquitto and `bmsbus aggregator` (a subprocess, as a user runs it), publishes
`rounds` samples for each of `packs` simulated packs (16 cells, 4 temperatures, switches; QoS 1, as fast
as the publisher can), and counts what the aggregator has processed by its journal (one line per
accepted sample), so the number is the aggregator's, not the publish interval's. Groups of
`group-size` packs and charge control (the defaults) are on, so the whole per-sample path is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.procs import Mosquitto  # noqa: E402

from bmsbus.shared.bus import Bus  # noqa: E402
from bmsbus.shared.config import MqttConfig  # noqa: E402

T0 = 1_700_000_000.0


def payload(bms: str, i: int, rng: random.Random) -> bytes:
    cells = [round(3.30 + rng.uniform(-0.01, 0.01), 3) for _ in range(16)]
    current = round(rng.uniform(-50, 50), 2)
    voltage = round(sum(cells), 3)
    return json.dumps({"schema_version": 1, "bms": bms, "ts": T0 + i, "boot": "bench", "seq": i,
                       "voltage": voltage, "current": current, "power": round(voltage * current, 2),
                       "soc": 50.0, "capacity": 280.0, "charge": 140.0, "cycles": 12, "cell_voltages": cells,
                       "temperatures": [20.0, 21.0, 22.0, 21.5], "mos_temperature": 30.0,
                       "switches": {"charge": True, "discharge": True, "balance": False}},
                      separators=(",", ":")).encode()


def journal_lines(state_dir: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in state_dir.glob("journal-*.log"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-aggregator-"))
    (work / "mosquitto").mkdir()
    broker = Mosquitto(work / "mosquitto", extra="max_queued_messages 0\n").start()
    packs = [f"p{n:04d}" for n in range(args.packs)]
    groups = [{"id": f"g{k:03d}", "members": packs[k:k + args.group_size]}
              for k in range(0, len(packs), args.group_size)] if args.group_size > 1 else []
    state_dir = work / "state"
    config = work / "bmsbus.yaml"
    config.write_text(yaml.safe_dump({
        "site": "bench", "devices": [{"alias": p, "type": "simulated"} for p in packs],
        "aggregator": {"state_dir": str(state_dir), "groups": groups, "snapshot_interval": 3600},
        "log_level": "warning"}))
    log = open(work / "aggregator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "bmsbus"), "aggregator", "--config", str(config),
                             "--mqtt", broker.url], stdout=log, stderr=subprocess.STDOUT)
    rng = random.Random(1)
    print(f"generating {args.packs * args.rounds} samples ...", flush=True)
    batches = [[(p, payload(p, i + 1, rng)) for p in packs] for i in range(args.rounds)]
    mqtt = MqttConfig(host="127.0.0.1", port=broker.port)
    total = args.packs * args.rounds
    try:
        async with Bus(mqtt, client_id="bench-publisher") as bus:
            # Wait for the aggregator's persistent session: one warm-up sample per pack (seq 0).
            while journal_lines(state_dir) < 1:
                await bus.publish("bmsbus/v1/bench/bms/p0000/sample", payload("p0000", 0, rng))
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            base = journal_lines(state_dir)
            cpu0 = cpu_seconds(proc.pid)
            started = time.perf_counter()
            sem = asyncio.Semaphore(args.concurrency)

            async def pub(topic: str, data: bytes) -> None:
                async with sem:
                    await bus.publish(topic, data)

            for k, batch in enumerate(batches):
                async with asyncio.TaskGroup() as tg:
                    for p, data in batch:
                        tg.create_task(pub(f"bmsbus/v1/bench/bms/{p}/sample", data))
                if args.rate:  # samples/s: pace the rounds
                    ahead = started + (k + 1) * len(batch) / args.rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            published = time.perf_counter()
            last, last_change = base, time.perf_counter()
            while True:
                n = journal_lines(state_dir) - base
                if n != last:
                    last, last_change = n, time.perf_counter()
                if n >= total or time.perf_counter() - last_change > 10:
                    break
                await asyncio.sleep(0.02)
            done = time.perf_counter()
            cpu = cpu_seconds(proc.pid) - cpu0
            processed = journal_lines(state_dir) - base  # before the clean stop compacts the journal
            rss_mb = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS:"))) / 1024
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        broker.stop()
    text = (work / "aggregator.log").read_text(errors="replace")
    dropped_in_client = text.count("Message queue is full")
    elapsed = done - started
    print(f"packs {args.packs}, groups {len(groups)}, samples published {total} "
          f"in {published - started:.2f} s ({total / (published - started):,.0f}/s)")
    print(f"aggregator processed {processed} samples in {elapsed:.2f} s: {processed / elapsed:,.0f} samples/s; "
          f"CPU {cpu:.2f} s = {processed / cpu:,.0f} samples per CPU-second; RSS {rss_mb:.0f} MB")
    if processed < total or dropped_in_client:
        print(f"LOST {total - processed} samples (aiomqtt queue-full warnings: {dropped_in_client})")
    print(f"work dir: {work}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0, help="publish at most this many samples/s (0: flat out)")
    asyncio.run(main(ap.parse_args()))
