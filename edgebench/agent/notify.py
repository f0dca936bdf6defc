"""systemd's notify protocol, the few lines the agent needs (Type=notify, WatchdogSec=):
READY=1 once connected, WATCHDOG=1 from the heartbeat loop, so a hung loop stops the
pings and systemd restarts the agent. Without $NOTIFY_SOCKET (not run by systemd) every
call does nothing."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Sends `state` (e.g. "READY=1") to the service manager; False when there is none
    or it cannot be reached (never an error: the agent works without systemd)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
