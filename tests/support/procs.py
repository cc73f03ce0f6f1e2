"""Starting and stopping the real external parts tests use (Mosquitto, VictoriaMetrics, ...)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed; `make test` installs it (apt-get install {binary})")
    return path


@dataclass
class Mosquitto:
    """A private Mosquitto on a free loopback port, persistence in its own directory."""

    workdir: Path
    port: int = 0
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        # `user root` keeps a root-started broker from dropping privileges and losing its persistence dir.
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.workdir}/\nautosave_interval 1\nuser root\n"
            f"max_queued_messages 100000\n{self.extra}\n"
        )
        self.log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([require("mosquitto"), "-c", str(conf)], stdout=self.log, stderr=self.log)
        wait_for_port(self.port)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        self.log.close()


@dataclass
class VictoriaMetrics:
    """A private VictoriaMetrics: accepts InfluxDB v2 line-protocol writes, reads back via /api/v1/export."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetrics:
        self.port = self.port or free_port()
        self.log = open(self.workdir / "vm.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [require("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-storageDataPath={self.workdir}/data", "-search.latencyOffset=0s", "-retentionPeriod=100y",
             "-loggerLevel=ERROR"], stdout=self.log, stderr=self.log)
        wait_for_port(self.port, timeout=20)
        return self

    def export(self, match: str) -> list[dict]:
        """Raw samples of every series matching a PromQL selector, after a flush."""
        import json
        import urllib.parse
        import urllib.request

        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        body = urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10).read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
            self.log.close()
