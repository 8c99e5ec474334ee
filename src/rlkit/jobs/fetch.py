"""Bring jobs' run directories home: ``rlkit fetch``.

A job's runs dir (``listing.META_RUNS_DIR``) is on the node where its
driver ran, which this machine may reach only through the cluster's
dashboard. So the fetch is itself a job: ``fetch_agent``, pinned to that
node by Ray's ``ray.io/node-id`` label, given the manifest of what is here
already, and writing the files that differ into its log as framed lines,
which the client follows through the Job API with the cluster's token
(``logs.follow``) and writes under ``DEST/<submission id>/``.

Nothing from the cluster is trusted: a path that is absolute, has ``..``
or leads outside the destination (through a symlink, say) is refused;
each file is written to a hidden ``.NAME.rlkit-fetch`` sibling and takes
its name only once its size and sha256 match the agent's trailer; a
fetch that breaks off removes its part files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import rlkit
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster, get_cluster
from rlkit.errors import BadInputError, WorkFailedError
from rlkit.jobs import package
from rlkit.jobs.client import connect, one_line
from rlkit.jobs.fetch_agent import CHECKPOINT_CHOICES, MANIFEST_ENV, PREFIX, encode_manifest, sha256_of
from rlkit.jobs.listing import JobRecord, find_jobs
from rlkit.jobs.logs import JobRef, follow
from rlkit.jobs.submit import new_submission_id

DEFAULT_DEST = Path("runs")
# Between two syncs of --follow: each sync is a small job on the cluster.
FOLLOW_EVERY_S = 10.0
# Ray keeps this with the fetch job, so that it is not taken for a training job.
META_FETCH = "rlkit.fetch"
# Ray's node label that names a node by its id (ray.util.placement_group.NODE_ID_LABEL_KEY).
NODE_ID_LABEL = "ray.io/node-id"
PART_SUFFIX = ".rlkit-fetch"


@dataclass
class Transfer:
    """One job's fetch so far: bytes and files received of those planned."""

    job_id: str
    files_total: int = 0
    bytes_total: int = 0
    files: int = 0
    bytes: int = 0
    unchanged: int = 0


@dataclass
class FetchResult:
    """One job's fetch: ``ok`` False with ``message`` saying why."""

    cluster: str
    id: str
    dest: str
    ok: bool
    files: int = 0
    bytes: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    message: str = ""
    paths: list[str] = field(default_factory=list)


OnProgress = Callable[[Transfer], None]


def check_checkpoints(choice: str) -> str:
    if choice not in CHECKPOINT_CHOICES:
        raise BadInputError(f"--checkpoints {choice}: give one of {', '.join(CHECKPOINT_CHOICES)}")
    return choice


def safe_path(root: Path, rel: str) -> Path:
    """Where ``rel``, a path named by the cluster, goes under ``root``; a
    ``WorkFailedError`` for one that is absolute, climbs, or leads outside
    ``root`` (through a symlink here, say)."""
    parts = PurePosixPath(rel).parts
    if (not rel or "\0" in rel or "\\" in rel or rel.startswith("/") or not parts
            or any(p in ("", ".", "..") for p in parts) or rel != "/".join(parts)):
        raise WorkFailedError(f"refused the path {rel!r} from the cluster: not a plain relative path")
    base = root.resolve()
    target = base.joinpath(*parts)
    if not target.resolve().is_relative_to(base):
        raise WorkFailedError(f"refused the path {rel!r} from the cluster: it leads outside {root}")
    return target


def _part(path: Path) -> Path:
    return path.with_name(f".{path.name}{PART_SUFFIX}")


def local_manifest(root: Path) -> dict[str, tuple[int, str]]:
    """``{path: (size, sha256)}`` of the files under ``root`` (part files
    and symlinks left out): what a fetch need not send again."""
    found: dict[str, tuple[int, str]] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name.endswith(PART_SUFFIX):
            continue
        found[path.relative_to(root).as_posix()] = (path.stat().st_size, sha256_of(path))
    return found


class Receiver:
    """Turns an agent's framed lines into files under ``root``. Lines
    without the prefix (Ray's own) pass by; the first bad frame stops the
    receiver with ``error`` set, and nothing half-written keeps a name."""

    def __init__(self, root: Path, transfer: Transfer, on_progress: OnProgress | None = None) -> None:
        self.root = root
        self.transfer = transfer
        self.on_progress = on_progress
        self.plan: list[tuple[str, Path]] | None = None
        self.received: list[str] = []
        self.missing: str | None = None
        self.ended = False
        self.error: str | None = None
        self._open: tuple[int, IO[bytes], Path, hashlib._Hash] | None = None
        self._offset = 0

    def feed(self, line: str) -> None:
        if self.error is not None or self.ended or not line.startswith(PREFIX):
            return
        try:
            self._frame(line[len(PREFIX):].rstrip("\r"))
        except (WorkFailedError, ValueError, OSError, binascii.Error) as err:
            self.error = one_line(err) if isinstance(err, WorkFailedError) else f"bad frame from the cluster: {err}"
            self.close()

    def _frame(self, frame: str) -> None:
        kind, _, rest = frame.partition(" ")
        if kind == "plan" and self.plan is None:
            data = json.loads(rest)
            self.plan = [(str(rel), safe_path(self.root, str(rel))) for rel, _ in data["send"]]
            self.transfer.files_total = len(self.plan)
            self.transfer.bytes_total = sum(int(size) for _, size in data["send"])
            self.transfer.unchanged = int(data["same"])
        elif kind == "missing" and self.plan is None:
            self.missing, self.ended = rest, True
        elif kind == "end" and self.plan is not None and self._open is None:
            self.ended = True
        elif kind in ("data", "done", "gone") and self.plan is not None:
            self._file_frame(kind, rest.split(" "))
        else:
            raise ValueError(f"unexpected {kind!r}")
        if self.on_progress:
            self.on_progress(self.transfer)

    def _file_frame(self, kind: str, words: list[str]) -> None:
        assert self.plan is not None
        index = int(words[0])
        if not 0 <= index < len(self.plan):
            raise ValueError(f"no file {index} in the plan")
        if self._open is None:
            target = self.plan[index][1]
            target.parent.mkdir(parents=True, exist_ok=True)
            part = _part(target)
            self._open, self._offset = (index, part.open("wb"), part, hashlib.sha256()), 0
        opened, f, part, digest = self._open
        if opened != index:
            raise ValueError(f"file {index} began before file {opened} was done")
        if kind == "data":
            offset, chunk = int(words[1]), base64.b64decode(words[2], validate=True)
            if offset != self._offset:
                raise ValueError(f"{self.plan[index][0]}: a chunk at {offset}, expected {self._offset} (lost log lines?)")
            f.write(chunk)
            digest.update(chunk)
            self._offset += len(chunk)
            self.transfer.bytes += len(chunk)
            return
        f.close()
        self._open = None
        if kind == "gone":
            part.unlink(missing_ok=True)
            return
        rel, target = self.plan[index]
        size, sha = int(words[1]), words[2]
        if (size, sha) != (self._offset, digest.hexdigest()):
            part.unlink(missing_ok=True)
            raise WorkFailedError(f"{rel}: {self._offset} bytes received, sha256 {digest.hexdigest()[:12]}; "
                                  f"the cluster sent {size} bytes, sha256 {sha[:12]}")
        os.replace(part, target)
        self.received.append(rel)
        self.transfer.files += 1

    def close(self) -> None:
        """Remove the part file of a file left unfinished."""
        if self._open is not None:
            _, f, part, _ = self._open
            f.close()
            part.unlink(missing_ok=True)
            self._open = None


@dataclass
class _Sync:
    job: JobRecord
    dest: Path
    agent_id: str = ""
    receiver: Receiver | None = None
    result: FetchResult | None = None
    started: float = field(default_factory=time.monotonic)


def fetch(job_ids: list[str], dest: Path = DEFAULT_DEST, *, checkpoints: str = "latest", keep_following: bool = False,
          clusters: list[Cluster] | None = None, on_progress: OnProgress | None = None,
          on_round: Callable[[list[FetchResult]], None] | None = None, timeout: float = 3.0) -> list[FetchResult]:
    """Fetch each job's runs dir into ``dest/<submission id>/``; results in
    the order asked. ``keep_following``: sync again every
    ``FOLLOW_EVERY_S`` until every job has ended, then once more (each
    round's results go to ``on_round``). Unknown ids raise ``BadInputError``
    before anything is sent."""
    check_checkpoints(checkpoints)
    jobs = find_jobs(job_ids, clusters, timeout)
    for job in jobs:
        if not job.runs_dir:
            raise BadInputError(f"job {job.id} on {job.cluster} has no run directory on record",
                                "rlkit fetches jobs that `rlkit submit` sent")
    earlier: dict[str, list[str]] = {}
    while True:
        final = not keep_following or not any(j.active for j in jobs)
        results = sync(jobs, dest, checkpoints=checkpoints, on_progress=on_progress, tolerate_missing=not final)
        if checkpoints == "latest":
            _drop_superseded(results, earlier)
        if final:
            return results
        if on_round:
            on_round(results)
        time.sleep(FOLLOW_EVERY_S)
        jobs = find_jobs(job_ids, clusters, timeout)


def _drop_superseded(results: list[FetchResult], earlier: dict[str, list[str]]) -> None:
    """Following a run with ``latest``, each round's new checkpoint replaces
    the one an earlier round of this fetch brought (and only that: files
    that were here before are the user's)."""
    for r in results:
        new = [p for p in r.paths if "/checkpoints/" in f"/{p}"]
        if not new:
            continue
        for old in earlier.get(r.id, []):
            if old not in new:
                (Path(r.dest) / old).unlink(missing_ok=True)
        earlier[r.id] = new


def sync(jobs: list[JobRecord], dest: Path, *, checkpoints: str = "latest", on_progress: OnProgress | None = None,
         tolerate_missing: bool = False) -> list[FetchResult]:
    """One incremental fetch of ``jobs``, all at once: one agent job each,
    whose logs are followed together. ``tolerate_missing``: a job not
    started yet, or whose runs dir is not there yet, is no failure."""
    syncs = [_Sync(job, dest / job.id) for job in jobs]
    waiting = [s for s in syncs if not _settled_here(s)]
    groups: dict[str, list[_Sync]] = {}
    for s in waiting:
        groups.setdefault(s.job.cluster, []).append(s)
    batches = list(groups.values())
    with package.packed_modules() as modules:
        outcomes = run_parallel(lambda batch: _start_agents(batch, modules, checkpoints, tolerate_missing), batches,
                                timeout=120.0)
    for batch, outcome in zip(batches, outcomes):
        if outcome.value is None:
            why = one_line(outcome.error) if outcome.error else "no answer within 120 s"
            for s in batch:
                s.result = _failed(s, why)
    started = [s for s in waiting if s.result is None]
    if started:
        _receive(started, on_progress)
    for s in started:
        s.result = _outcome(s, tolerate_missing)
    return [s.result for s in syncs if s.result is not None]


def _settled_here(s: _Sync) -> bool:
    """A local cluster's run dir that is the destination itself: here already."""
    cluster = get_cluster(s.job.cluster)
    source = Path(os.path.expanduser(os.path.expandvars(s.job.runs_dir or "")))
    if cluster.provider != "local" or source.resolve() != s.dest.resolve():
        return False
    s.result = FetchResult(s.job.cluster, s.job.id, str(s.dest), True, message="the run dir itself: nothing to fetch")
    return True


def _start_agents(batch: list[_Sync], modules: package.Package, checkpoints: str, tolerate_pending: bool) -> bool:
    cluster = get_cluster(batch[0].job.cluster)
    client = connect(cluster)
    uri = package.modules_uri(client, modules)
    for s in batch:
        if not s.job.driver_node_id:
            # A job still pending has no node yet: while following, that is no failure.
            s.result = (FetchResult(s.job.cluster, s.job.id, str(s.dest), True, message="not started yet")
                        if s.job.status == "PENDING" and tolerate_pending
                        else _failed(s, "Ray does not say which node ran the job's driver (did it start?)"))
            continue
        s.dest.mkdir(parents=True, exist_ok=True)
        s.agent_id = new_submission_id("rlkit-fetch", cluster.name, set())
        s.receiver = Receiver(s.dest, Transfer(s.job.id))
        entrypoint = (f"python -m rlkit.jobs.fetch_agent --runs-dir {shlex.quote(s.job.runs_dir or '')} "
                      f"--checkpoints {checkpoints}")
        try:
            client.submit_job(
                entrypoint=entrypoint, submission_id=s.agent_id, metadata={META_FETCH: rlkit.__version__},
                runtime_env={"py_modules": [uri], "env_vars": {MANIFEST_ENV: encode_manifest(local_manifest(s.dest)),
                                                                "PYTHONUNBUFFERED": "1"}},
                entrypoint_label_selector={NODE_ID_LABEL: s.job.driver_node_id},
            )
        except Exception as err:  # noqa: BLE001 - Ray raises plain exceptions of many kinds
            s.result = _failed(s, f"the fetch job was refused: {one_line(err)}")
    return True


def _receive(started: list[_Sync], on_progress: OnProgress | None) -> None:
    refs = {s.agent_id: JobRef(get_cluster(s.job.cluster), s.agent_id, s.job.id) for s in started}
    by_agent = {s.agent_id: s for s in started}
    for s in started:
        assert s.receiver is not None
        s.receiver.on_progress = on_progress
    try:
        outcomes = follow(list(refs.values()), lambda ref, line: by_agent[ref.job_id].receiver.feed(line))  # type: ignore[union-attr]
    finally:
        for s in started:
            s.receiver.close()  # type: ignore[union-attr]
    for outcome in outcomes:
        s = by_agent[outcome.job_id]
        assert s.receiver is not None
        if not s.receiver.ended and s.receiver.error is None:
            s.receiver.error = f"fetch job {s.agent_id} {outcome.describe()} before it was done"


def _outcome(s: _Sync, tolerate_missing: bool) -> FetchResult:
    receiver = s.receiver
    assert receiver is not None
    t = receiver.transfer
    result = FetchResult(s.job.cluster, s.job.id, str(s.dest), receiver.error is None, t.files, t.bytes,
                         t.unchanged, round(time.monotonic() - s.started, 2), receiver.error or "", receiver.received)
    if receiver.missing is not None and not tolerate_missing:
        result.ok, result.message = False, f"no run directory {receiver.missing} on the node that ran the job"
    elif receiver.missing is not None:
        result.message = "no run directory yet"
    return result


def _failed(s: _Sync, why: str) -> FetchResult:
    return FetchResult(s.job.cluster, s.job.id, str(s.dest), False, message=why.removeprefix(f"{s.job.cluster}: "))
