"""``rlkit fetch``: bring jobs' run directories home."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rlkit.cli import options, output, results

if TYPE_CHECKING:
    from rlkit.jobs.fetch import FetchResult


def fetch(
    job_ids: list[str] = typer.Argument(..., metavar="JOB_ID...", help="Submission ids (as `rlkit submit` prints them)."),
    to: Path = typer.Option(Path("runs"), "--to", help="Where runs go: DIR/<submission id>/<run>/."),
    checkpoints: str = typer.Option("latest", "--checkpoints", help="Checkpoints to fetch: latest, all or none."),
    keep_following: bool = typer.Option(False, "--follow", "-f", help="Sync again every 10 s until the jobs end."),
    cluster: list[str] = typer.Option([], "--cluster", "-c", help="Where to look (repeatable; default: every cluster)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait for each cluster's answer when looking.",
                                  callback=options.seconds),
) -> int:
    """Copy jobs' run directories (config.yaml, metrics.jsonl, tb/, checkpoints) from their clusters to here.

    A small job on the node that ran each job reads its run directory and
    sends what differs from the copy here through the job's log, with the
    cluster's token: no SSH login needed. Files already here and unchanged
    are skipped; each file's size and sha256 are checked before it takes
    its name. The copy works with `rlkit eval`, `rlkit train --resume` and
    `tensorboard --logdir`. Exit code 1 when a fetch failed, 3 when some
    of several did.

    Examples:

        rlkit fetch ppo_cartpole-lab-a-3f9c

        rlkit fetch ppo_cartpole-lab-a-3f9c --follow &  tensorboard --logdir runs

        rlkit fetch ID1 ID2 --to ~/results --checkpoints all --json
    """
    from rlkit.clusters.registry import select_clusters
    from rlkit.jobs.client import quiet_client_logs
    from rlkit.jobs.fetch import check_checkpoints

    check_checkpoints(checkpoints)
    quiet_client_logs()
    found = fetch_with_progress(job_ids, to, checkpoints, keep_following, select_clusters(cluster) if cluster else None,
                                timeout, quiet=as_json)
    if as_json:
        output.print_json([vars(r) for r in found])
    return results.exit_code([None if r.ok else RuntimeError(r.message) for r in found])


def fetch_with_progress(job_ids: list[str], to: Path, checkpoints: str, keep_following: bool,
                        clusters: list | None = None, timeout: float = 3.0, quiet: bool = False) -> list[FetchResult]:
    """Fetch with a progress bar (bytes and files) on stderr, and one line
    per job and round; the last round's results."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from rlkit.jobs.fetch import Transfer, fetch

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TextColumn("{task.fields[files]}"))
    # A bar is for a terminal; a log or a pipe gets the result lines alone.
    live = not quiet and output.err_console.is_terminal
    with Progress(*columns, console=output.err_console, transient=True, disable=not live) as progress:
        tasks: dict[str, int] = {}

        def on_progress(t: Transfer) -> None:
            if t.job_id not in tasks:
                tasks[t.job_id] = progress.add_task(t.job_id, total=None, files="")
            progress.update(tasks[t.job_id], completed=t.bytes, total=t.bytes_total or None,
                            files=f"{t.files}/{t.files_total} files")

        def on_round(found: list[FetchResult]) -> None:
            for task in tasks.values():
                progress.remove_task(task)
            tasks.clear()
            if not quiet:
                report(found)

        found = fetch(job_ids, to, checkpoints=checkpoints, keep_following=keep_following, clusters=clusters,
                      on_progress=on_progress, on_round=on_round, timeout=timeout)
    if not quiet:
        report(found)
    return found


def report(found: list[FetchResult]) -> None:
    from rlkit.jobs.package import describe_size

    for r in found:
        if not r.ok:
            results.failed(f"{r.cluster} {r.id}", r.message)
            continue
        done = r.message or f"{r.files} file(s), {describe_size(r.bytes)} fetched, {r.unchanged} unchanged"
        results.succeeded(f"{r.cluster} {r.id}", f"{done} -> {r.dest}")


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
