"""The sweeps rlkit knows of: one small JSON per sweep in ``$RLKIT_HOME/sweeps``,
and their status as ``rlkit status`` shows it, read from each sweep's directory."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rlkit import paths
from rlkit.files import atomic_write
from rlkit.sweep.state import FAILED, FINISHED, INTERRUPTED, RUNNING, STATE_FILE, now_iso, read_progress


@dataclass
class SweepRecord:
    """``cluster`` is None for a sweep driven from this machine, which is then
    known to be alive by ``host``, ``pid`` and the pid's start time; a sweep
    sent to a cluster carries its ``job_id`` there."""

    name: str
    path: str
    cluster: str | None = None
    started: str = field(default_factory=now_iso)
    host: str = field(default_factory=socket.gethostname)
    pid: int | None = None
    pid_start: int | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SweepStatus:
    """One row of the sweeps table. ``state`` is running, finished,
    interrupted, failed, or unknown when the sweep's directory cannot be
    read from here (a sweep on a remote cluster's disk)."""

    name: str
    cluster: str
    path: str
    started: str
    state: str
    metric: str | None = None
    mode: str | None = None
    trials: dict[str, int] = field(default_factory=dict)
    best_metric: float | None = None
    best_trial: str | None = None
    job_id: str | None = None


def sweeps_dir() -> Path:
    return paths.rlkit_home() / "sweeps"


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` (field 22 of /proc/PID/stat): a pid the kernel
    reused later has another one."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[19])


def save_record(record: SweepRecord, key: str | None = None) -> Path:
    """Write the record as ``KEY.json``: the sweep directory's name by default,
    the job's submission id for a sweep on a cluster."""
    path = paths.private_dir(sweeps_dir()) / f"{key or Path(record.path).name}.json"
    atomic_write(path, json.dumps(record.to_dict(), indent=2) + "\n", mode=0o600)
    return path


def local_record(name: str, sweep_dir: Path) -> SweepRecord:
    pid = os.getpid()
    return SweepRecord(name=name, path=str(sweep_dir), pid=pid, pid_start=start_ticks(pid))


def list_records() -> list[SweepRecord]:
    directory = sweeps_dir()
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(SweepRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a record half-written by a newer rlkit is skipped, never fatal
    return records


# A sweep whose directory is on a remote cluster's disk is known by its job.
_JOB_STATE = {"PENDING": RUNNING, "RUNNING": RUNNING, "SUCCEEDED": FINISHED, "FAILED": FAILED, "STOPPED": INTERRUPTED}


def _sweep_dir(record: SweepRecord) -> Path | None:
    """The sweep's directory: the record's path, or for a sweep sent to a
    cluster the newest ``NAME-*`` directory under the storage path it named."""
    path = Path(record.path)
    if (path / STATE_FILE).is_file():
        return path
    found = sorted(path.glob(f"{record.name}-*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def _driver_alive(record: SweepRecord, job_states: dict[str, str]) -> bool | None:
    """None when this machine cannot tell (another host, a job it cannot see)."""
    if record.job_id is not None:
        state = job_states.get(record.job_id)
        return None if state is None else state in ("PENDING", "RUNNING")
    if record.pid is None or record.host != socket.gethostname():
        return None
    return start_ticks(record.pid) == record.pid_start


def live_driver(sweep_dir: Path) -> int | None:
    """The pid of a driver on this machine that still runs the sweep in ``sweep_dir``."""
    for record in list_records():
        if Path(record.path) == sweep_dir and record.job_id is None and _driver_alive(record, {}):
            return record.pid
    return None


def sweep_status(record: SweepRecord, job_states: dict[str, str] | None = None) -> SweepStatus:
    """``job_states`` maps submission ids to Ray job states, for sweeps sent to clusters."""
    job_states = job_states or {}
    status = SweepStatus(name=record.name, cluster=record.cluster or "local", path=record.path,
                         started=record.started, state="unknown", job_id=record.job_id)
    sweep_dir = _sweep_dir(record)
    progress = None if sweep_dir is None else read_progress(sweep_dir)
    if progress is None:
        status.state = _JOB_STATE.get(job_states.get(record.job_id or ""), "unknown")
        return status
    status.path = str(sweep_dir)
    status.state, status.metric, status.mode = progress.state, progress.metric, progress.mode
    status.trials = progress.counts()
    best = progress.best()
    if best is not None:
        status.best_metric, status.best_trial = best.metric, best.trial_id
    if status.state == RUNNING and _driver_alive(record, job_states) is False:
        # Killed without a chance to say so: `rlkit sweep --resume` continues it.
        status.state = INTERRUPTED
    return status


def sweep_statuses(clusters: list[str] | None = None, job_states: dict[str, str] | None = None) -> list[SweepStatus]:
    """Every known sweep, newest last; only those on ``clusters`` when given
    ("local" names the sweeps driven from this machine)."""
    statuses = [sweep_status(r, job_states) for r in list_records()]
    if clusters is not None:
        statuses = [s for s in statuses if s.cluster in clusters]
    return sorted(statuses, key=lambda s: s.started)
