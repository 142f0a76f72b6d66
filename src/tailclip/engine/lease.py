"""Run ownership: owner ids, when an owner is provably gone, and the heartbeat that keeps a lease.

A claimed run carries its ``owner`` and ``lease_expires_at`` (seconds since the epoch). The
owner renews the lease while it trains (:class:`Heartbeat`, every ``lease_seconds / 4``); a
run is taken from its owner only when

* the lease has expired (the owner stopped renewing: killed, frozen, its host gone), or
* the owner is provably dead: it ran on this boot of this machine and its pid is gone (a
  ``kill -9`` is resumed at once instead of after the lease), or
* the user says so (``--reclaim``).

A pid alone proves nothing across a reboot (the pid is reused) or across hosts that share a
name, so owners carry the boot id (``/proc/sys/kernel/random/boot_id``); where there is none,
only the lease decides. Leases compare wall clocks: hosts sharing a store need clocks synced
to well under ``lease_seconds``.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Protocol

__all__ = ["LEASE_SECONDS", "Heartbeat", "make_owner", "owner_alive", "owner_dead"]

LEASE_SECONDS = 60.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace(":", "") or "-"
    except OSError:
        return "-"


_BOOT_ID = _boot_id()


def make_owner() -> str:
    """A fresh owner id for this process: ``"<host>:<boot id>:<pid>:<uuid>"``."""
    return f"{socket.gethostname()}:{_BOOT_ID}:{os.getpid()}:{uuid.uuid4().hex}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def owner_alive(owner: str | None) -> bool:
    """False only when ``owner``'s process is provably gone (see the module docstring).

    Owners of older stores, ``"<host>:<pid>:<uuid>"``, are judged by host name and pid.
    """
    if not owner:
        return False
    parts = owner.split(":")
    try:
        host, pid = parts[0], int(parts[-2])
    except (ValueError, IndexError):
        return True
    if len(parts) == 4 and (parts[1] == "-" or parts[1] != _BOOT_ID):
        return True
    return host != socket.gethostname() or _pid_running(pid)


def owner_dead(owner: str | None) -> int:
    """``not owner_alive(owner)`` as the SQLite function ``owner_dead`` (NULL owners are not dead)."""
    return int(owner is not None and not owner_alive(owner))


class LeaseStore(Protocol):
    def renew_lease(self, owner: str) -> int: ...


class Heartbeat:
    """A daemon thread that renews ``owner``'s leases in ``store`` every ``interval`` seconds.

    Use as a context manager around training; it renews once on entry. A renewal that fails
    (a locked or vanished store) is retried at the next beat: the lease is long enough for
    several misses.
    """

    def __init__(self, store: LeaseStore, owner: str, interval: float) -> None:
        self.store, self.owner, self.interval = store, owner, float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tailclip-lease", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.renew_lease(self.owner)
            except Exception:  # noqa: BLE001, S112  (retried at the next beat)
                continue

    def __enter__(self) -> Heartbeat:
        self.store.renew_lease(self.owner)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
