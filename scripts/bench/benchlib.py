"""What the training benchmark's children and its parent share.

Children (child_sb3.py, child_rllib.py) report to the parent with ``emit``:
one line ``@bench {json}`` on stdout per event, stamped with ``time.time()``
so the parent can measure from just before it spawned the child.

The parent watches a child's process tree with ``ProcWatch``: the peak
resident memory (VmHWM) of the driver and of every rollout-actor process,
read from /proc, so every framework is measured the same way from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

MARK = "@bench "
TARGET_RETURN = 475.0
WINDOW = 100
"""Episodes in the rolling mean that must reach TARGET_RETURN."""


# ---------------------------------------------------------------- child side

def child_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget-steps", type=int, default=None,
                   help="env-step budget (default: the reference settings' own)")
    return p.parse_args()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(event: str, **fields: object) -> None:
    """Report one event to the parent: ``start``, ``progress``, ``solved`` or ``end``."""
    record = {"event": event, "t": time.time(), **fields}
    sys.stdout.write(MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------- parent side

def parse_events(lines: list[str]) -> list[dict]:
    return [json.loads(line[len(MARK):]) for line in lines if line.startswith(MARK)]


def vmhwm_mb(pid: int) -> float | None:
    """Peak resident memory of a live process (VmHWM), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``, with its start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(entry.name)):
            children.setdefault(st[0], []).append((int(entry.name), st[1]))
    out, stack = {}, [root]
    while stack:
        for child, started in children.get(stack.pop(), []):
            out[child] = started
            stack.append(child)
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class ProcWatch:
    """Polls a child's process tree: driver peak RSS and each rollout actor's peak RSS.

    Rollout actors are the descendants whose title (Ray's ``ray::ClassName``)
    starts with ``actor_title``. VmHWM only grows, so the last reading before
    a process exits is its peak to within one poll interval.
    """

    def __init__(self, root: int, actor_title: str | None, interval: float = 0.5) -> None:
        self.root, self.actor_title, self.interval = root, actor_title, interval
        self.driver_mb = 0.0
        self.actor_mb: dict[int, float] = {}
        self.seen: dict[int, int] = {}
        """pid -> start time of every process seen in the tree."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        self.driver_mb = max(self.driver_mb, vmhwm_mb(self.root) or 0.0)
        for pid, started in descendants(self.root).items():
            self.seen[pid] = started
            if self.actor_title and _title(pid).startswith(self.actor_title):
                self.actor_mb[pid] = max(self.actor_mb.get(pid, 0.0), vmhwm_mb(pid) or 0.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def leftovers(self) -> list[int]:
        """Processes of this child's tree still alive (same pid and start time: never a reused pid)."""
        return [pid for pid, started in self.seen.items() if (st := _stat(pid)) and st[1] == started]
