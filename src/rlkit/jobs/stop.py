"""Stop jobs through the Job API and wait until Ray says they stopped.

Ray sends the job's processes SIGINT for jobs rlkit submitted (rlkit train
saves a checkpoint then) and SIGKILL 30 s later; SIGTERM and SIGKILL 3 s
later for others (``RAY_JOB_STOP_SIGNAL``, ``RAY_JOB_STOP_WAIT_TIME_S``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import get_cluster
from rlkit.jobs.client import connect, one_line
from rlkit.jobs.listing import ACTIVE, JobRecord

# Longer than the SIGKILL delay of rlkit's jobs.
WAIT_S = 45.0


@dataclass
class JobStopResult:
    """``status`` is the job's status after the stop (UNKNOWN when its
    cluster could not say); ``ok`` False with ``message`` saying why."""

    cluster: str
    id: str
    name: str
    ok: bool
    status: str
    message: str


def stop_jobs(jobs: list[JobRecord], wait_s: float = WAIT_S, timeout: float = 10.0) -> list[JobStopResult]:
    """Stop ``jobs`` (clusters in parallel) and wait up to ``wait_s`` for
    each to end; results in the order given."""
    groups: dict[str, list[JobRecord]] = {}
    for job in jobs:
        groups.setdefault(job.cluster, []).append(job)
    batches = list(groups.values())
    outcomes = run_parallel(lambda batch: _stop_batch(batch, wait_s, timeout), batches,
                            timeout=timeout + wait_s + 5.0)
    results: dict[tuple[str, str], JobStopResult] = {}
    for batch, outcome in zip(batches, outcomes):
        if outcome.value is not None:
            results.update(((r.cluster, r.id), r) for r in outcome.value)
            continue
        why = one_line(outcome.error) if outcome.error else f"no answer within {timeout + wait_s:.0f} s"
        results.update(((j.cluster, j.id), JobStopResult(j.cluster, j.id, j.name, False, "UNKNOWN", why))
                       for j in batch)
    return [results[(j.cluster, j.id)] for j in jobs]


def _stop_batch(jobs: list[JobRecord], wait_s: float, timeout: float) -> list[JobStopResult]:
    client = connect(get_cluster(jobs[0].cluster), timeout)
    was_running: dict[str, bool] = {}
    failed: dict[str, str] = {}
    for job in jobs:
        try:
            was_running[job.id] = client.stop_job(job.id)
        except Exception as err:  # noqa: BLE001 - Ray raises plain exceptions of many kinds
            failed[job.id] = one_line(err)
    final: dict[str, str] = {}
    waiting = [job.id for job in jobs if job.id in was_running]
    deadline = time.monotonic() + wait_s
    while waiting:
        for job_id in list(waiting):
            try:
                status = str(client.get_job_status(job_id))
            except Exception as err:  # noqa: BLE001
                failed[job_id] = one_line(err)
                waiting.remove(job_id)
                continue
            if status not in ACTIVE:
                final[job_id] = status
                waiting.remove(job_id)
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return [_result(job, was_running.get(job.id, False), final.get(job.id), failed.get(job.id), wait_s)
            for job in jobs]


def _result(job: JobRecord, was_running: bool, status: str | None, error: str | None,
            wait_s: float) -> JobStopResult:
    if error is not None:
        return JobStopResult(job.cluster, job.id, job.name, False, "UNKNOWN", error)
    if status is None:
        return JobStopResult(job.cluster, job.id, job.name, False, job.status,
                             f"asked to stop, still active after {wait_s:.0f} s")
    message = "stopped" if was_running else f"was not running ({status})"
    return JobStopResult(job.cluster, job.id, job.name, True, status, message)
