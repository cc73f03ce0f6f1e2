"""systemd notification and watchdog (sd_notify) without a dependency.

`notify()` sends one datagram to $NOTIFY_SOCKET (a path, or an abstract socket written `@name`). Outside
systemd the variable is unset and everything here does nothing.

`run_watchdog()` is one task of the collector:
- `READY=1` once the bus has connected for the first time, or `ready_timeout` (10 s) after start if the
  broker is not reachable yet - a collector without a broker still samples into its outbox, and
  `Type=notify` must not time out and restart it for that;
- `STATUS=<one line>` (bus, devices sampling, outbox) whenever it changes, shown by `systemctl status`;
- `WATCHDOG=1` every min(WATCHDOG_USEC / 2, 10 s) while the collector is not stalled (Health.stalled:
  every device task silent far beyond its period). The pings come from the event loop, so a blocked loop
  stops them too. When they stop, systemd kills and restarts the service after `WatchdogSec`.
- `STOPPING=1` when the collector stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

from .health import Health

log = logging.getLogger("bmsbus.collector.systemd")

READY_TIMEOUT = 10.0
MAX_TICK = 10.0


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` (e.g. "READY=1", several lines allowed) to systemd. False if there is no socket or the
    send failed; never raises."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]  # abstract namespace
    elif path.startswith("/"):
        address = path
    else:
        log.debug("NOTIFY_SOCKET %r is not a unix socket path; not notifying", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a full receive queue drops this message instead of blocking the loop
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if the watchdog is off or meant for
    another process (WATCHDOG_PID)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog off", env.get("WATCHDOG_USEC"))
        return None
    return usec / 2e6 if usec > 0 else None


async def run_watchdog(health: Health, env: Mapping[str, str] | None = None,
                       ready_timeout: float | None = None) -> None:
    """Tell systemd we are ready, how we are, and that we are alive (module docstring); until cancelled."""
    env = dict(os.environ if env is None else env)  # a snapshot: what systemd gave us at start
    if not env.get("NOTIFY_SOCKET"):
        return
    ready_timeout = READY_TIMEOUT if ready_timeout is None else ready_timeout
    interval = watchdog_interval(env)
    tick = min(interval, MAX_TICK) if interval else MAX_TICK
    started = time.monotonic()
    ready = False
    pinging = True
    last_status = None
    if interval:
        log.info("systemd watchdog: pinging every %.1f s while the collector is not stalled", tick)
    try:
        while True:
            stall = health.stalled()
            status = f"stalled: {stall}" if stall else health.summary()
            if not ready and (health.bus_connects or time.monotonic() - started >= ready_timeout):
                ready = True
                notify(f"READY=1\nSTATUS={status}", env)
            elif status != last_status:
                notify(f"STATUS={status}", env)
            last_status = status
            if interval:
                if stall is None:
                    notify("WATCHDOG=1", env)
                    if not pinging:
                        log.warning("systemd watchdog: device tasks active again; pinging again")
                    pinging = True
                elif pinging:
                    log.error("systemd watchdog: %s; no longer pinging, systemd restarts the collector", stall)
                    pinging = False
            if ready:
                await asyncio.sleep(tick)
            else:  # wake up at the first connect to say READY at once
                wait = min(tick, max(0.0, ready_timeout - (time.monotonic() - started)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(health.bus_up.wait(), wait)
    finally:
        notify("STOPPING=1", env)
