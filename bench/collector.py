"""Collector cost: CPU and memory of one collector process reading simulated BMSes, with a real broker.

    .venv/bin/python bench/collector.py [--seconds 60] [--period 1.0] [--devices 8]

Starts a private Mosquitto and `bmsbus collector` (a subprocess, as a user or systemd runs it) with
`devices` simulated BMSes of different protocols (each decoded through its real driver and codec from
byte-exact emulator frames), sampling every `period` s. After every device has published once, it
measures for `seconds`: CPU seconds of the collector (user + system, /proc/<pid>/stat), its peak resident
memory (VmHWM, /proc/<pid>/status) and the samples a subscriber received per device. The health
endpoint is on, and its /metrics are read at the end to cross-check the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.procs import Mosquitto, free_port  # noqa: E402

from bmsbus.shared.bus import Bus  # noqa: E402
from bmsbus.shared.config import MqttConfig  # noqa: E402

# protocol, cells, capacity (Ah), chemistry: a mix of BLE-shaped (20-byte notifications) and serial ones.
DEVICES = [("jk_32s", 16, 280, "lfp"), ("jk_24s", 14, 100, "nmc"), ("jbd", 4, 50, "lfp"), ("daly", 8, 120, "lfp"),
           ("ant", 10, 150, "lto"), ("sok", 5, 60, "lfp"), ("litime", 6, 200, "nmc"), ("pace_uart", 15, 230, "lfp")]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    (work / "mosquitto").mkdir()
    broker = Mosquitto(work / "mosquitto").start()
    http_port = free_port()
    devices = [{"alias": f"d{i}_{proto}", "type": "simulated", "protocol": proto, "cells": cells,
                "capacity_ah": cap, "chemistry": chem}
               for i, (proto, cells, cap, chem) in enumerate((DEVICES * 8)[:args.devices])]
    ids = [d["alias"] for d in devices]
    config = work / "bmsbus.yaml"
    config.write_text(yaml.safe_dump({
        "site": "bench", "collector": {"id": "bench", "sample_period": args.period,
                                       "http": {"host": "127.0.0.1", "port": http_port}},
        "devices": devices, "log_level": "warning"}))
    log = open(work / "collector.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "bmsbus"), "collector", "--config", str(config),
                             "--mqtt", broker.url], stdout=log, stderr=subprocess.STDOUT)
    launched = time.perf_counter()
    received: list[tuple[float, str, int]] = []  # (arrival, bms, seq)
    subscribed = asyncio.Event()

    async def watch() -> None:
        async with Bus(MqttConfig(host="127.0.0.1", port=broker.port), client_id="bench-watcher") as bus:
            await bus.subscribe("bmsbus/v1/bench/bms/+/sample")
            subscribed.set()
            async for m in bus.messages():
                received.append((time.perf_counter(), m.topic.split("/")[-2], json.loads(m.payload)["seq"]))

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        deadline = time.perf_counter() + 60
        while len({bms for _, bms, _ in received}) < len(ids):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"collector not publishing for every device; log: {work / 'collector.log'}")
            await asyncio.sleep(0.05)
        first_all = time.perf_counter() - launched
        startup_cpu = cpu_seconds(proc.pid)
        rss_start = proc_status_kb(proc.pid, "VmRSS")
        cpu0, t0 = startup_cpu, time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.perf_counter()
        hwm, rss_end = proc_status_kb(proc.pid, "VmHWM"), proc_status_kb(proc.pid, "VmRSS")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
        healthz = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10).read().decode()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        broker.stop()

    window = Counter(bms for t, bms, _ in received if t0 <= t < t1)
    expected = args.seconds / args.period
    cpu = cpu1 - cpu0
    elapsed = t1 - t0
    print(f"{len(ids)} simulated devices at {args.period:g} s for {elapsed:.1f} s "
          f"(first sample from all after {first_all:.1f} s; startup CPU {startup_cpu:.2f} s, RSS {rss_start / 1024:.1f} MB)")
    print(f"CPU {cpu:.2f} s (user+sys) = {100 * cpu / elapsed:.1f} % of one core; "
          f"{cpu / max(1, sum(window.values())) * 1000:.2f} ms per sample")
    print(f"peak RSS (VmHWM) {hwm / 1024:.1f} MB; RSS at end {rss_end / 1024:.1f} MB")
    print(f"samples received per device in the window (expected ~{expected:.0f}):")
    for bms in ids:
        seqs = [s for _, b, s in received if b == bms]
        in_order = all(b > a for a, b in zip(seqs, seqs[1:], strict=False))
        print(f"  {bms:<14} {window[bms]:5d}{'' if in_order else '  SEQ OUT OF ORDER'}")
    totals = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("bmsbus_device_samples_total{")}
    codec = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("bmsbus_device_codec_errors_total{"))
    print(f"/healthz: {healthz.strip()}; /metrics samples_total {int(sum(totals.values()))} "
          f"(received {len(received)}), codec errors {codec:.0f}")
    text = (work / "collector.log").read_text(errors="replace")
    problems = proc.returncode != 0 or "Traceback" in text
    if problems:
        print(f"collector exit code {proc.returncode}; log tail:\n{text[-2000:]}")
    print(f"work dir: {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    ap.add_argument("--period", type=float, default=1.0, help="sample_period of every device (s)")
    ap.add_argument("--devices", type=int, default=8)
    sys.exit(asyncio.run(main(ap.parse_args())))
