"""Send jobs to several clusters at once.

Jobs pair with clusters in the order of the address file (the first job to
the first cluster, as ``awk | head -n 1`` users expect); more jobs than
clusters go round-robin; ``broadcast`` sends every job to every cluster.
The working dir is packed once and uploaded to each cluster; clusters are
served in parallel, one thread each, so that one that is down or slow costs
the others nothing.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import rlkit
from rlkit import paths
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.provider import REMOTE_RUNS_BASE, provider_for
from rlkit.clusters.registry import Cluster, select_clusters
from rlkit.errors import BadInputError
from rlkit.jobs import listing, package
from rlkit.jobs.client import connect, one_line
from rlkit.jobs.spec import Job, JobSpec, prepare

# A stop interrupts the job as Ctrl-C would, so that rlkit train saves a
# checkpoint to resume from, and leaves it that long before SIGKILL.
STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "30"}
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Assignment:
    """One job on one cluster, with the id and run directory it will have."""

    job: Job
    cluster: Cluster
    submission_id: str
    runs_dir: str

    def env_vars(self) -> dict[str, str]:
        # Unbuffered, so that `--follow` shows lines as the job prints them.
        return {"PYTHONUNBUFFERED": "1", **STOP_ENV, paths.RUNS_DIR_ENV: self.runs_dir,
                paths.CLUSTER_ENV: self.cluster.name, **self.job.spec.env}

    def metadata(self) -> dict[str, str]:
        """Ray keeps this with the job: rlkit's tag, and the config it ran."""
        meta = {listing.TAG: rlkit.__version__, listing.META_NAME: self.job.name,
                listing.META_CLUSTER: self.cluster.name, listing.META_RUNS_DIR: self.runs_dir}
        if self.job.config is not None:
            config = self.job.config.model_dump(mode="json")
            config["runs_dir"] = self.runs_dir
            meta[listing.META_CONFIG] = json.dumps(config, separators=(",", ":"))
        return meta


@dataclass
class SubmissionPlan:
    """What ``submit_plan`` sends; ``idle`` names clusters left without a job."""

    assignments: list[Assignment]
    working_dir: Path
    idle: list[str] = field(default_factory=list)


@dataclass
class SubmitResult:
    """The outcome of one assignment; ``error`` is None when Ray accepted
    the job. ``input_error`` when the fault lies on this side (a token
    file, a wrong address)."""

    cluster: str
    name: str
    submission_id: str
    entrypoint: str
    runs_dir: str
    dashboard_url: str
    error: str | None = None
    input_error: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_submissions(
    specs: list[JobSpec],
    clusters: list[str] | None = None,
    *,
    broadcast: bool = False,
    working_dir: Path = Path("."),
    runs_dir: str | None = None,
) -> SubmissionPlan:
    """Check the jobs and pair them with ``clusters`` (names; all
    registered clusters, in file order, for None). Contacts no cluster."""
    if not specs:
        raise BadInputError("no jobs to submit")
    targets = select_clusters(clusters)
    if not targets:
        raise BadInputError(f"no clusters in {paths.address_file()}", "start one with `rlkit launch local`")
    working_dir = working_dir.resolve()
    base = _runs_base(runs_dir)
    _refuse_cluster_as_command(specs, {c.name for c in select_clusters()})
    jobs = [prepare(spec, working_dir) for spec in specs]
    if broadcast:
        pairs = [(job, cluster) for job in jobs for cluster in targets]
    else:
        pairs = [(job, targets[i % len(targets)]) for i, job in enumerate(jobs)]
    taken: set[str] = set()
    assignments = []
    for job, cluster in pairs:
        submission_id = new_submission_id(job.name, cluster.name, taken)
        assignments.append(Assignment(job, cluster, submission_id, _runs_dir(job, cluster, submission_id, base, working_dir)))
    used = {a.cluster.name for a in assignments}
    return SubmissionPlan(assignments, working_dir, idle=[c.name for c in targets if c.name not in used])


def _runs_base(runs_dir: str | None) -> str | None:
    if runs_dir is None:
        return None
    if runs_dir.startswith("~"):
        return "${HOME}" + runs_dir[1:]
    if not runs_dir.startswith(("/", "${")):
        raise BadInputError(f"--runs-dir {runs_dir}: give an absolute path (a directory on the clusters)")
    return runs_dir.rstrip("/")


def _runs_dir(job: Job, cluster: Cluster, submission_id: str, base: str | None, working_dir: Path) -> str:
    """The run's parent directory on the cluster, one per job: where the
    cluster's provider puts runs (a hand-written entry's cluster is taken
    to be elsewhere: under the Ray user's home)."""
    if job.config is not None and "runs_dir" in job.config.model_fields_set:
        return job.config.runs_dir
    if paths.RUNS_DIR_ENV in job.spec.env:
        return job.spec.env[paths.RUNS_DIR_ENV]
    if base is None:
        base = provider_for(cluster.record).runs_base(working_dir) if cluster.record else REMOTE_RUNS_BASE
    return f"{base}/{submission_id}"


def _refuse_cluster_as_command(specs: list[JobSpec], names: set[str]) -> None:
    """``rlkit submit lab -- CMD`` sends the command ``lab CMD``: clusters
    are named with --cluster, and no cluster's name is a command."""
    for spec in specs:
        first = spec.entrypoint.split(maxsplit=1)[0]
        if first in names:
            raise BadInputError(
                f"entrypoint {spec.entrypoint!r} starts with {first!r}, the name of a cluster",
                f"name clusters with --cluster: rlkit submit --cluster {first} -- COMMAND",
            )


def new_submission_id(name: str, cluster: str, taken: set[str]) -> str:
    """``NAME-CLUSTER-SUFFIX``: readable in tables and in ``ray job list``,
    and unique (the suffix is random; Ray rejects a reused id)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{name[:40]}-{cluster[:40]}").strip("-")
    while (candidate := f"{stem}-{secrets.token_hex(2)}") in taken:
        pass
    taken.add(candidate)
    return candidate


def submit_plan(plan: SubmissionPlan, shipment: package.Shipment,
                timeout: float = DEFAULT_TIMEOUT_S) -> list[SubmitResult]:
    """Submit every assignment, clusters in parallel; results in plan order.
    A cluster that fails, or does not finish within ``timeout`` seconds,
    fails its own jobs only."""
    by_cluster: dict[str, list[Assignment]] = {}
    for assignment in plan.assignments:
        by_cluster.setdefault(assignment.cluster.name, []).append(assignment)
    groups = list(by_cluster.values())
    outcomes = run_parallel(lambda group: _submit_group(group, shipment, timeout), groups, timeout=timeout)
    results: dict[str, SubmitResult] = {}
    for group, outcome in zip(groups, outcomes):
        if outcome.value is not None:
            results.update((r.submission_id, r) for r in outcome.value)
            continue
        if outcome.error is None:
            error, input_error = f"no answer within {timeout:.0f} s (`rlkit status` shows whether the job arrived)", False
        else:
            error, input_error = one_line(outcome.error), isinstance(outcome.error, BadInputError)
        results.update((a.submission_id, _result(a, error, input_error)) for a in group)
    return [results[a.submission_id] for a in plan.assignments]


def _submit_group(group: list[Assignment], shipment: package.Shipment, timeout: float) -> list[SubmitResult]:
    """One cluster's jobs, one after another: the first uploads the
    working dir and the rest find it there."""
    cluster = group[0].cluster
    client = connect(cluster, timeout)
    runtime = {"working_dir": str(shipment.working_dir.path), "py_modules": [package.modules_uri(client, shipment.modules)]}
    results = []
    for assignment in group:
        spec = assignment.job.spec
        try:
            client.submit_job(
                entrypoint=assignment.job.entrypoint,
                submission_id=assignment.submission_id,
                runtime_env={**runtime, "env_vars": assignment.env_vars()},
                metadata=assignment.metadata(),
                entrypoint_num_cpus=spec.cpus,
                entrypoint_num_gpus=spec.gpus,
            )
        except Exception as err:  # noqa: BLE001 - Ray raises plain exceptions of many kinds
            results.append(_result(assignment, f"{cluster.name}: {one_line(err)}"))
        else:
            results.append(_result(assignment))
    return results


def _result(assignment: Assignment, error: str | None = None, input_error: bool = False) -> SubmitResult:
    return SubmitResult(
        cluster=assignment.cluster.name, name=assignment.job.name, submission_id=assignment.submission_id,
        entrypoint=assignment.job.entrypoint, runs_dir=assignment.runs_dir,
        dashboard_url=assignment.cluster.dashboard_url, error=error, input_error=input_error,
    )


def submit(
    specs: list[JobSpec],
    clusters: list[str] | None = None,
    *,
    broadcast: bool = False,
    working_dir: Path = Path("."),
    runs_dir: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    include: tuple[str, ...] = (),
) -> list[SubmitResult]:
    """Plan, pack and submit in one call: ``rlkit submit`` from Python.
    Raises ``RlkitError`` for bad input (nothing is sent then); a cluster
    that fails is reported in its results. ``include``: patterns of files
    to send although they match ``package.SECRETS``."""
    plan = plan_submissions(specs, clusters, broadcast=broadcast, working_dir=working_dir, runs_dir=runs_dir)
    with package.packed(plan.working_dir, include) as shipment:
        return submit_plan(plan, shipment, timeout)
