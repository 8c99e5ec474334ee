"""``rlkit logs``: a job's logs, wherever it runs."""

from __future__ import annotations

import sys

import typer

from rlkit.cli import options, output
from rlkit.errors import BadInputError


def logs(
    job_id: str = typer.Argument(..., help="Submission id (as `rlkit submit` and `rlkit status` print it)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Only the last N lines written so far."),
    cluster: str | None = typer.Option(None, "--cluster", "-c", help="The job's cluster (default: ask them all)."),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait for each cluster's answer.", callback=options.seconds),
) -> int:
    """Print a job's logs; rlkit finds the cluster that runs it.

    With --follow, the exit code is the job's: 0 when it succeeded, 1 when
    it failed or was stopped.

    Examples:

        rlkit logs ppo_cartpole-lab-a-3f9c --follow

        rlkit logs ppo_cartpole-lab-a-3f9c --tail 20
    """
    from rlkit.clusters.registry import get_cluster, select_clusters
    from rlkit.jobs import JobRef, find_jobs, job_logs
    from rlkit.jobs import follow as follow_logs
    from rlkit.jobs.client import quiet_client_logs

    if tail is not None and tail < 0:
        raise BadInputError(f"--tail must be 0 or more, not {tail}")
    job = find_jobs([job_id], select_clusters([cluster]) if cluster else None, timeout)[0]
    text = job_logs(job, timeout=max(timeout, 10.0))
    lines = text.splitlines(keepends=True)
    sys.stdout.write("".join(lines[len(lines) - tail:] if tail is not None else lines))
    sys.stdout.flush()
    if not follow:
        return 0

    def on_line(_ref: JobRef, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    quiet_client_logs()
    ref = JobRef(get_cluster(job.cluster), job.id, job.id, start=len(text))
    try:
        outcome = follow_logs([ref], on_line)[0]
    except KeyboardInterrupt:
        output.note("Stopped following; the job runs on.")
        return 130
    # On stderr: stdout holds the log alone.
    output.note(f"{job.cluster} {job.id}: {outcome.describe()}")
    return 0 if outcome.ok else 1


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
