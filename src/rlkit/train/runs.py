"""The runs on disk: what each run directory says about its run, and its learning curve.

A run directory (``rlkit train``'s, a sweep trial's, or one fetched home
under ``runs/<submission id>/``) holds config.yaml and metrics.jsonl and/or
checkpoints/. ``run.json`` is its process record: written when its log
starts (pid, host, cluster) and again when the loop ends (why). From those
a run's status follows without guessing:

    finished     the loop ended on a stop condition
    interrupted  Ctrl-C (or a job stop) ended it
    failed       an error ended it, or its process is gone without saying why
    running      no end yet, and its process is alive on this host
    unknown      no end yet and its process is on another host, or no
                 run.json at all (an older rlkit, or a run still starting)

Reading never imports torch: ``rlkit runs`` stays quick on many runs.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from rlkit import paths
from rlkit.errors import BadInputError
from rlkit.files import atomic_write
from rlkit.train.checkpoint import CHECKPOINT_DIR, CONFIG_FILE, checkpoints

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
RUN_FORMAT = 1
FINISHED = ("total_steps", "target_return", "time_budget")
"""Stop reasons of a run that got where its config said."""
STATUSES = ("running", "finished", "interrupted", "failed", "unknown")
MAX_DEPTH = 3
"""How far below the runs directory a run directory may sit: sweeps/<sweep>/<trial>."""
ROLLING = "charts/rolling_return"
EPISODIC = "charts/episodic_return"


@dataclass
class RunInfo:
    """One run directory, as the table and ``--json`` show it."""

    name: str
    """The run directory's path under the runs directory (``<config name>-<timestamp>``, a level
    down for fetched runs): what ``--plot`` takes."""
    path: str
    config_name: str | None
    env: str | None
    algorithm: str | None
    status: str
    detail: str
    """Why the status is what it is, in a few words."""
    steps: int
    updates: int
    wall_s: float | None
    rolling_return: float | None
    started: str | None
    """ISO 8601, UTC: when the run first started (kept across resumes)."""
    ended: str | None
    stop_reason: str | None
    host: str | None
    cluster: str | None
    pid: int | None
    checkpoints: int
    skipped_lines: int = 0
    """metrics.jsonl lines that were not records (a torn last line, damage): left out."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def where(self) -> str | None:
        return self.cluster or self.host


@dataclass
class Curve:
    """A run's returns as logged: one point per update that had them."""

    name: str
    steps: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    rolling_return: list[float | None] = field(default_factory=list)
    episodic_return: list[float | None] = field(default_factory=list)


# --- the record a run writes ---------------------------------------------------------------------


def record_start(run_dir: Path, start_step: int) -> None:
    """This process runs ``run_dir`` from ``start_step``; any earlier end is void (a resume)."""
    before = _read_record(run_dir) or {}
    record = {
        "format": RUN_FORMAT,
        "started": before.get("started") or _now(),
        "attempt_started": _now(),
        "start_step": start_step,
        "pid": os.getpid(),
        "pid_started": _process_start(os.getpid()),
        "host": socket.gethostname(),
        "cluster": os.environ.get(paths.CLUSTER_ENV),
        "end": None,
    }
    atomic_write(run_dir / RUN_FILE, json.dumps(record, indent=1) + "\n")


def record_end(run_dir: Path, reason: str, step: int, updates: int, wall_s: float, error: str | None = None) -> None:
    """Why the run's loop ended (a stop reason, ``interrupted`` or ``failed``) and where it was."""
    record = _read_record(run_dir) or {"format": RUN_FORMAT}
    record["end"] = {"time": _now(), "reason": reason, "step": step, "updates": updates,
                     "wall_s": round(wall_s, 3), "error": error}
    atomic_write(run_dir / RUN_FILE, json.dumps(record, indent=1) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux): a pid reused later starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; starttime is field 22.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    now = _process_start(pid)
    if now is not None or Path("/proc/self/stat").exists():
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# --- reading run directories ---------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and ((path / METRICS_FILE).is_file() or (path / CHECKPOINT_DIR).is_dir())


def default_root() -> Path:
    return Path(paths.runs_dir()).expanduser()


def _checked_root(root: Path) -> Path:
    if not root.exists():
        raise BadInputError(f"{root}: no such directory", "pass the directory that holds the runs (rlkit train's runs_dir)")
    if not root.is_dir():
        raise BadInputError(f"{root}: not a directory", "pass the directory that holds the runs (rlkit train's runs_dir)")
    try:
        os.listdir(root)
    except OSError as err:
        raise BadInputError(f"{root}: cannot read: {err.strerror}", "check its permissions") from None
    return root


def find_run_dirs(root: Path) -> list[Path]:
    """The run directories under ``root`` (or ``root`` itself): directly, a level down
    (fetched runs, under their submission id) or two (sweep trials, under sweeps/<sweep>/).
    Hidden and unreadable directories are passed over."""
    _checked_root(root)
    if is_run_dir(root):
        return [root]
    found = []
    for directory, subdirs, _files in os.walk(root):
        here = Path(directory)
        if here != root and is_run_dir(here):
            found.append(here)
            subdirs.clear()  # tb/ and checkpoints/ hold no runs
            continue
        # Deep enough for every layout above; `rlkit runs ~` must not walk the whole disk.
        if len(here.relative_to(root).parts) >= MAX_DEPTH:
            subdirs.clear()
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return found


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run under ``root`` (default: where ``rlkit train`` writes), newest first."""
    root = root or default_root()
    runs = [read_run(path, _name(path, root)) for path in find_run_dirs(root)]
    return sorted(runs, key=lambda r: (r.started or "", r.path), reverse=True)


def _name(run_dir: Path, root: Path) -> str:
    """How the table names a run, and how ``resolve_run`` finds it again: its path under the root."""
    return run_dir.name if run_dir == root else run_dir.relative_to(root).as_posix()


def read_run(run_dir: Path, name: str | None = None) -> RunInfo:
    config = _read_config(run_dir)
    rows, skipped = _read_metrics(run_dir)
    record = _read_record(run_dir)
    end = record.get("end") if record else None
    end = end if isinstance(end, dict) else None
    last = rows[-1] if rows else {}
    status, detail = _status(record, end)
    rolling = next((row[ROLLING] for row in reversed(rows) if _number(row.get(ROLLING))), None)
    steps = _int(end.get("step")) if end else None
    updates = _int(end.get("updates")) if end else None
    wall = end.get("wall_s") if end else None
    started = record.get("started") if record else None
    if started is None:
        # No record (an older rlkit): the config was written when the run dir was made.
        started = datetime.fromtimestamp((run_dir / CONFIG_FILE).stat().st_mtime, timezone.utc).isoformat(
            timespec="milliseconds")
    algo = config.get("algo")
    env = config.get("env")
    return RunInfo(
        name=name or run_dir.name, path=str(run_dir),
        config_name=_str(config.get("name")),
        env=_str(env.get("id")) if isinstance(env, dict) else None,
        algorithm=_str(algo.get("name")) if isinstance(algo, dict) else None,
        status=status, detail=detail,
        steps=steps if steps is not None else _int(last.get("step")) or 0,
        updates=updates if updates is not None else _int(last.get("update")) or 0,
        wall_s=wall if _number(wall) else (last.get("time") if _number(last.get("time")) else None),
        rolling_return=rolling,
        started=_str(started), ended=_str(end.get("time")) if end else None,
        stop_reason=_str(end.get("reason")) if end else None,
        host=_str(record.get("host")) if record else None,
        cluster=_str(record.get("cluster")) if record else None,
        pid=_int(record.get("pid")) if record else None,
        checkpoints=len(checkpoints(run_dir)),
        skipped_lines=skipped,
    )


def _status(record: dict[str, Any] | None, end: dict[str, Any] | None) -> tuple[str, str]:
    if record is None:
        return "unknown", f"no readable {RUN_FILE} (an older rlkit, or the run is still starting)"
    if end is not None:
        reason = end.get("reason")
        if reason in FINISHED:
            return "finished", f"stopped by {reason}"
        if reason == "interrupted":
            return "interrupted", "stopped by Ctrl-C or a job stop"
        return "failed", str(end.get("error") or reason)
    pid, host = _int(record.get("pid")), record.get("host")
    if pid is None:
        return "unknown", f"{RUN_FILE} names no process"
    if host != socket.gethostname():
        return "unknown", f"no end recorded; its process {pid} is on {host}, not here"
    if _alive(pid, _int(record.get("pid_started"))):
        return "running", f"process {pid}"
    return "failed", f"process {pid} ended without recording why (killed?)"


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of metrics.jsonl and how many lines were not one."""
    try:
        text = (run_dir / METRICS_FILE).read_text(errors="replace")
    except OSError:
        return [], 0
    rows, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(row, dict) and _int(row.get("step")) is not None:
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- choosing runs and reading their curves ------------------------------------------------------


def resolve_run(ref: str, root: Path | None = None) -> tuple[Path, str | None]:
    """A run directory given by path, by its name as ``list_runs`` gives it, or by its config's
    name (the newest such run; the note then says which it took)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if is_run_dir(path):
            return path, None
        raise BadInputError(f"{ref}: not a run directory (no {CONFIG_FILE} with {METRICS_FILE} or {CHECKPOINT_DIR}/)",
                            "pass a runs/<name>-<timestamp> directory, or a run's name from `rlkit runs`")
    root = root or default_root()
    found = list_runs(root) if root.is_dir() else []
    wanted = ref.rstrip("/")
    matches = [r for r in found if wanted in (r.name, Path(r.path).name)]
    if len(matches) > 1:
        raise BadInputError(f"{ref}: {len(matches)} runs under {root} have that name",
                            f"pass one of them by path: {', '.join(r.path for r in matches)}")
    if matches:
        return Path(matches[0].path), None
    named = [r for r in found if r.config_name == wanted]
    if named:
        note = None if len(named) == 1 else f"{ref}: the newest of {len(named)} runs of that name, {named[0].name}"
        return Path(named[0].path), note
    raise BadInputError(f"{ref}: no such run directory, and no run of that name under {root}",
                        "`rlkit runs` lists the runs")


def read_curve(run_dir: Path, name: str | None = None) -> Curve:
    rows, _skipped = _read_metrics(run_dir)
    curve = Curve(name or run_dir.name)
    for row in rows:
        rolling, episodic = row.get(ROLLING), row.get(EPISODIC)
        if not (_number(rolling) or _number(episodic)):
            continue
        curve.steps.append(row["step"])
        curve.time_s.append(float(row["time"]) if _number(row.get("time")) else 0.0)
        curve.rolling_return.append(float(rolling) if _number(rolling) else None)
        curve.episodic_return.append(float(episodic) if _number(episodic) else None)
    return curve
