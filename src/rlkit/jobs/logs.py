"""A job's logs: the whole text through the Job API, or followed while the
job runs (several jobs at once, each line labelled with its job)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlkit.clusters import dashboard
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster, get_cluster
from rlkit.jobs.client import connect, one_line, token_of
from rlkit.jobs.listing import JobRecord, job_path

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class JobRef:
    """A job to follow; ``start`` counts the characters of its log that
    were shown already (``--tail``), which the stream skips."""

    cluster: Cluster
    job_id: str
    label: str
    start: int = 0


@dataclass
class JobOutcome:
    """How a followed job ended: SUCCEEDED, FAILED, STOPPED, or UNKNOWN
    when its cluster could not say (``message`` says why)."""

    cluster: str
    job_id: str
    label: str
    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"

    def describe(self) -> str:
        return self.status if self.ok or not self.message else f"{self.status}: {self.message}"


def job_logs(job: JobRecord, timeout: float = 10.0) -> str:
    """Everything the job has written so far."""
    cluster = get_cluster(job.cluster)
    data = dashboard.get_json(cluster.dashboard_url, job_path(job.id, "/logs"), token_of(cluster), timeout,
                              cluster.auth_header)
    return str(data["logs"])


def follow(refs: list[JobRef], on_line: Callable[[JobRef, str], None],
           timeout: float = 10.0) -> list[JobOutcome]:
    """Stream the logs of all ``refs`` at once, calling ``on_line`` (always
    from this thread) for each line, until every job has ended."""
    clusters = list({ref.cluster.name: ref.cluster for ref in refs}.values())
    connected = run_parallel(lambda c: connect(c, timeout), clusters, timeout=timeout + 1.0)
    clients: dict[str, JobSubmissionClient | str] = {}
    for cluster, outcome in zip(clusters, connected):
        if outcome.value is not None:
            clients[cluster.name] = outcome.value
        else:
            why = one_line(outcome.error) if outcome.error else f"no answer within {timeout:.0f} s"
            clients[cluster.name] = why.removeprefix(f"{cluster.name}: ")
    return asyncio.run(_follow_all(refs, clients, on_line))


async def _follow_all(refs: list[JobRef], clients: dict[str, JobSubmissionClient | str],
                      on_line: Callable[[JobRef, str], None]) -> list[JobOutcome]:
    return list(await asyncio.gather(*(_follow_one(ref, clients[ref.cluster.name], on_line) for ref in refs)))


async def _follow_one(ref: JobRef, client: JobSubmissionClient | str,
                      on_line: Callable[[JobRef, str], None]) -> JobOutcome:
    if isinstance(client, str):
        return JobOutcome(ref.cluster.name, ref.job_id, ref.label, UNKNOWN, client)
    skip, pending, broke = ref.start, "", ""
    try:
        async for chunk in client.tail_job_logs(ref.job_id):
            if skip:
                chunk, skip = chunk[skip:], max(0, skip - len(chunk))
            # Chunks end anywhere: only whole lines go out until the end.
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                on_line(ref, line)
    except Exception as err:  # noqa: BLE001 - a broken stream still ends in a status
        broke = f"log stream broke: {one_line(err)}"
    if pending:
        on_line(ref, pending)
    try:
        info = await asyncio.to_thread(client.get_job_info, ref.job_id)
    except Exception as err:  # noqa: BLE001
        return JobOutcome(ref.cluster.name, ref.job_id, ref.label, UNKNOWN, broke or one_line(err))
    return JobOutcome(ref.cluster.name, ref.job_id, ref.label, str(info.status), info.message or broke)
