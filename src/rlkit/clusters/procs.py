"""Find and stop exactly the processes of one local cluster, by pid.

``ray stop`` stops every Ray process on the host, other clusters included;
rlkit instead recognises a cluster's processes by the marker that
``ray start`` passed down in their environment, adds their descendants
(workers and agents rename themselves over their environment, so only
their parents tell), and signals those pids alone. A pid is trusted only together with its start
time, so a pid that the kernel has since reused is never signalled.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from rlkit import paths
from rlkit.clusters.records import ProcessRef

MARKER_ENV = "RLKIT_CLUSTER_MARKER"
# What a cluster's processes keep of the environment that starts them (a
# local head and on-prem nodes alike), besides PATH and LC_*: what Ray, a
# virtualenv or conda env and the GPUs need; jobs see nothing else of it.
INHERITED_ENV = ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH",
                 "CUDA_VISIBLE_DEVICES", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV")
_PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) of ``pid``, or None if it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses.
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def _read(pid: int, name: str) -> bytes:
    try:
        return (_PROC / str(pid) / name).read_bytes()
    except OSError:
        return b""


def process_ref(pid: int) -> ProcessRef | None:
    """The running process ``pid``, told apart from later ones by its start time."""
    stat = _stat(pid)
    return None if stat is None else ProcessRef(pid, stat[2])


def this_process() -> ProcessRef:
    stat = _stat(os.getpid())
    assert stat is not None
    return ProcessRef(os.getpid(), stat[2])


def is_running(ref: ProcessRef) -> bool:
    """True while that very process runs (a zombie has finished running)."""
    stat = _stat(ref.pid)
    return stat is not None and stat[2] == ref.start_ticks and stat[0] not in ("Z", "X")


def cluster_marker(name: str) -> str:
    """The start of the marker of every cluster rlkit launches as ``name``
    from this ``$RLKIT_HOME``: its processes can be found from the name
    alone, whatever became of its record."""
    home = os.path.realpath(paths.rlkit_home())
    return hashlib.sha256(f"{home}\0{name}".encode()).hexdigest()[:16] + "-"


def find_processes(marker: str) -> list[ProcessRef]:
    """The running processes whose environment holds a cluster marker that
    starts with ``marker``, with all their descendants; only this user's
    processes.

    Not the processes whose command line names the cluster's temp dir: one
    of those may be someone's ``tail -f`` of the cluster's logs."""
    uid = os.getuid()
    marker_entry = f"{MARKER_ENV}={marker}".encode()
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, int, int]] = {}
    roots: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        stats[pid] = stat
        children.setdefault(stat[1], []).append(pid)
        if any(v.startswith(marker_entry) for v in _read(pid, "environ").split(b"\0")):
            roots.append(pid)
    found: set[int] = set()
    stack = [p for p in roots if p != os.getpid()]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return [ProcessRef(pid, stats[pid][2]) for pid in sorted(found)]


def _signal(refs: Iterable[ProcessRef], sig: signal.Signals) -> None:
    for ref in refs:
        if is_running(ref):
            try:
                os.kill(ref.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _wait(refs: list[ProcessRef], timeout: float) -> list[ProcessRef]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [r for r in refs if is_running(r)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def terminate(groups: list[list[ProcessRef]], grace_s: float) -> list[ProcessRef]:
    """Stop the groups one after another: SIGTERM, then SIGKILL for what is
    still running after its share of ``grace_s``. Returns the processes that
    survived even SIGKILL (normally none)."""
    survivors: list[ProcessRef] = []
    share = grace_s / max(1, len(groups))
    for group in groups:
        _signal(group, signal.SIGTERM)
        stubborn = _wait(group, share)
        _signal(stubborn, signal.SIGKILL)
        survivors += _wait(stubborn, 5.0)
    return survivors


_TEMP_DIR_ARG = re.compile(r"--(?:temp|session)[-_]dir=(/.+?)(?:/session_[^/]*)?$")


def temp_dir_of(refs: Iterable[ProcessRef]) -> str | None:
    """The temp dir that Ray's processes among ``refs`` were given (their
    ``--temp-dir``, or the parent of their ``--session-dir``): the
    cluster's, for a cluster whose record is lost."""
    for ref in refs:
        for arg in _read(ref.pid, "cmdline").decode(errors="replace").split("\0"):
            match = _TEMP_DIR_ARG.match(arg)
            if match:
                return match[1]
    return None


_LOG_DIR_ARG = re.compile(r"--logs?[-_]dir=(/.+)$")


def log_dirs_of(refs: Iterable[ProcessRef]) -> set[str]:
    """The log dirs that Ray's processes among ``refs`` were given (GCS's
    ``--log_dir``, the other head processes' ``--log-dir`` or ``--logs-dir``)."""
    dirs = set()
    for ref in refs:
        for arg in _read(ref.pid, "cmdline").decode(errors="replace").split("\0"):
            match = _LOG_DIR_ARG.match(arg)
            if match:
                dirs.add(match[1].rstrip("/"))
    return dirs


def find_writers(dirs: Iterable[str]) -> list[ProcessRef]:
    """This user's processes (but this one) that hold a file under one of
    ``dirs`` open for writing. Every process a raylet starts inherits its
    ``raylet.out`` and ``raylet.err``, so this finds a dead raylet's agents and
    workers from their first instant, after they renamed themselves over their
    environment too; a reader of the logs (someone's ``tail -f``) is not one."""
    prefixes = tuple(f"{d}/" for d in dirs)
    if not prefixes:
        return []
    uid, found = os.getuid(), []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        if any(_writes_under(fd, prefixes) for fd in fds):
            ref = process_ref(int(entry.name))
            if ref is not None and is_running(ref):
                found.append(ref)
    return sorted(found, key=lambda r: r.pid)


def _writes_under(fd: Path, prefixes: tuple[str, ...]) -> bool:
    try:
        if not os.readlink(fd).startswith(prefixes):
            return False
        flags = (fd.parent.parent / "fdinfo" / fd.name).read_text().split("flags:", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return int(flags, 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def command_name(ref: ProcessRef) -> str:
    return _read(ref.pid, "comm").decode(errors="replace").strip()
