"""What the training benchmark's children and its parent share.

Children (child_sb3.py, child_rllib.py) report to the parent with ``emit``:
one line ``@bench {json}`` on stdout per event, stamped with ``time.time()``
so the parent can measure from just before it spawned the child.

The parent runs each child with ``run_child``: from just before the spawn
to its exit, watching its process tree with ``ProcWatch`` (the peak resident
memory, VmHWM, of the driver and of every rollout-actor process, read from
/proc), so every framework is timed and measured the same way from outside.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
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


@dataclass
class Child:
    """One child process, as the parent saw it."""

    t0: float
    """time.time() just before the spawn: what every child timestamp is measured from."""
    out: list[str]
    """Its stdout, line by line."""
    exit_code: int | None
    capped: bool
    """It ran past the wall cap and was stopped."""
    interrupted: bool
    """It was still running at ``interrupt_after`` and got its SIGINT."""
    wall_s: float
    """Spawn to exit."""
    driver_peak_mb: float | None
    actor_peak_mb: list[float] = field(default_factory=list)
    load_before: float = 0.0
    load_after: float = 0.0
    stderr: str = ""
    """The name of its stderr log."""


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the child's process group (it may save and report), then kill it."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: list[str], *, stem: str, logs: Path, cap: float, actor_title: str | None,
              torch_threads: int, cwd: Path, interrupt_after: float | None = None) -> Child:
    """Run ``cmd`` in a session of its own until it exits or ``cap`` seconds pass; logs go to ``logs/stem.*``.

    With ``interrupt_after``, the child's main process gets one SIGINT that
    many seconds after the spawn: a child that stops at its next iteration
    boundary on Ctrl-C (rlkit train, child_rllib_marl.py) ends its training
    there and reports. The child always starts a fresh local Ray (RAY_ADDRESS
    is dropped), finds benchlib on PYTHONPATH, and gets ``torch_threads``
    OMP/MKL threads (0: torch's default). Processes of its tree that outlive
    it are killed.
    """
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(here)
    if torch_threads:
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    if interrupt_after is not None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # An ignored SIGINT (nohup) is inherited, and the child would ignore the soft stop.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    load_before = os.getloadavg()[0]
    out: list[str] = []
    with (logs / f"{stem}.stderr").open("w") as log:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd, env=env,
                                start_new_session=True)
        watch = ProcWatch(proc.pid, actor_title)
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        capped = interrupted = False
        try:
            if interrupt_after is not None:
                try:
                    proc.wait(timeout=interrupt_after)
                except subprocess.TimeoutExpired:
                    interrupted = True
                    proc.send_signal(signal.SIGINT)
            proc.wait(timeout=max(0.0, t0 + cap - time.time()))
        except subprocess.TimeoutExpired:
            capped = True
            _stop(proc)
        wall_s = round(time.time() - t0, 2)
        reader.join()
        (logs / f"{stem}.stdout").write_text("".join(out))
        watch.stop()
        deadline = time.time() + 10  # Ray's own processes may take a moment to exit
        while (left := watch.leftovers()) and time.time() < deadline:
            time.sleep(0.2)
        for pid in left:  # a process of this run that outlived its driver
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return Child(t0, out, proc.returncode, capped, interrupted, wall_s, round(watch.driver_mb, 1) or None,
                 sorted(round(v, 1) for v in watch.actor_mb.values()), load_before, os.getloadavg()[0],
                 log.name)


# ------------------------------------------------------------- the reports

def median(values: list[float | None], missing_is_inf: bool = False) -> float | None:
    """The median of the values given; with ``missing_is_inf`` a None (a run that never got there) counts as infinite."""
    vals = [math.inf if v is None else v for v in values] if missing_is_inf else [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (math.isinf(a) and math.isinf(b)):
        return None
    return a / b


def fmt(v: object, digits: int = 0, inf: str = "unsolved") -> str:
    """A table cell: thousands separators, ``-`` for none, ``inf`` for an infinite median."""
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return inf
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def finite(obj: object) -> object:
    """JSON has no infinity: an infinite median or ratio is written as null."""
    if isinstance(obj, float) and math.isinf(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
