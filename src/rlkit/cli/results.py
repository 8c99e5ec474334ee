"""Per-cluster result lines and the exit code of a command that works on
several clusters at once (0 all done, 3 some failed; one cluster alone
keeps its own error's code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rlkit.cli import output
from rlkit.errors import PartialFailureError, RlkitError, WorkFailedError

if TYPE_CHECKING:
    from rlkit.clusters.launching import LaunchOutcome
    from rlkit.clusters.parallel import Outcome
    from rlkit.clusters.provider import Provider, Spec


def succeeded(name: str, message: str) -> None:
    output.console.print(f"[green]✓[/] [bold]{name}[/] ", end="")
    output.console.print(message, markup=False, highlight=False, soft_wrap=True)


def failed(name: str, message: str) -> None:
    output.err_console.print(f"[red]✗[/] [bold]{name}[/] ", end="")
    # Library errors name their cluster already; the line starts with it.
    output.err_console.print(message.removeprefix(f"{name}: "), markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    output.err_console.print("[yellow]warning:[/] ", end="")
    output.err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def exit_code(errors: list[BaseException | None]) -> int:
    """The exit code once every failure has been reported."""
    failures = [e for e in errors if e is not None]
    if not failures:
        return 0
    if len(errors) == 1:
        return failures[0].exit_code if isinstance(failures[0], RlkitError) else WorkFailedError.exit_code
    return PartialFailureError.exit_code


def launch_with_progress(provider: Provider, specs: Sequence[Spec], timeout_s: float) -> list[Outcome[LaunchOutcome]]:
    """Launch ``specs`` in parallel with one live stage line per cluster (on stderr)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from rlkit.clusters import launching

    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[stage]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=output.err_console, transient=True) as progress:
        tasks = {s.name: progress.add_task(s.name, total=None, stage="waiting") for s in specs}

        def on_stage(name: str, stage: str) -> None:
            progress.update(tasks[name], stage=stage)

        return launching.launch_many(provider, specs, on_stage, timeout_s=timeout_s)
