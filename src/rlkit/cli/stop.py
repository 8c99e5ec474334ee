"""``rlkit stop``: stop submitted jobs, wherever they run."""

from __future__ import annotations

import sys

import typer

from rlkit.cli import options, output, results
from rlkit.errors import BadInputError


def stop(
    job_ids: list[str] | None = typer.Argument(None, help="Submission ids of the jobs to stop."),
    clusters: list[str] = typer.Option([], "--cluster", "-c", help="Where to look (repeatable; default: every cluster)."),
    all_jobs: bool = typer.Option(False, "--all-jobs", help="Every running job on the --cluster, rlkit's or not."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait for each cluster's answer when looking.", callback=options.seconds),
) -> int:
    """Stop jobs: Ray interrupts them as Ctrl-C would (rlkit train saves a checkpoint first).

    What still runs 30 s later is killed. Jobs that rlkit did not submit
    get Ray's default: SIGTERM, and SIGKILL 3 s later.

    rlkit finds the cluster that runs each job; clusters are asked in
    parallel. Exit code 3 when some jobs could not be stopped.

    Examples:

        rlkit stop ppo_cartpole-lab-a-3f9c -y

        rlkit stop --cluster lab-a --all-jobs
    """
    from rlkit.clusters.registry import select_clusters
    from rlkit.jobs import find_jobs, list_jobs, stop_jobs
    from rlkit.jobs.client import quiet_client_logs

    if bool(job_ids) == all_jobs:
        raise BadInputError("name the jobs to stop, or pass --cluster NAME --all-jobs (not both)")
    if all_jobs and not clusters:
        raise BadInputError("--all-jobs needs --cluster NAME", "it stops every running job on that cluster")
    targets = select_clusters(clusters) if clusters else None
    errors: list[BaseException | None] = []
    if all_jobs:
        listing = list_jobs(targets, all_jobs=True, timeout=timeout)
        for name, why in listing.errors.items():
            results.failed(name, f"cannot list its jobs: {why}")
            errors.append(RuntimeError(why))
        jobs = [j for j in listing.jobs if j.active and j.submitted]
    else:
        jobs = find_jobs(list(job_ids or []), targets, timeout)
    if not jobs:
        output.note("No running jobs there: nothing to stop.")
        if as_json:
            output.print_json([])
        return results.exit_code(errors) if errors else 0
    if not yes:
        if not sys.stdin.isatty():
            raise BadInputError("stop asks for confirmation", "pass -y to stop without asking")
        output.err_console.print("[bold]This will stop:[/]")
        for job in jobs:
            tag = "" if job.rlkit else " (not submitted by rlkit)"
            output.err_console.print(f"  {job.cluster} {job.id} {job.status}{tag}", markup=False, highlight=False)
        if not typer.confirm("Proceed?", default=False, err=True):
            output.note("Nothing stopped.")
            return 0
    quiet_client_logs()
    with output.err_console.status(f"Stopping {len(jobs)} job(s)..."):
        stopped = stop_jobs(jobs)
    for result in stopped:
        if not result.ok:
            results.failed(f"{result.cluster} {result.id}", result.message)
        elif not as_json:
            results.succeeded(f"{result.cluster} {result.id}", result.message)
    if as_json:
        output.print_json([vars(r) for r in stopped])
    return results.exit_code(errors + [None if r.ok else RuntimeError(r.message) for r in stopped])


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
