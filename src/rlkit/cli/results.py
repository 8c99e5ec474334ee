"""Per-cluster result lines and the exit code of a command that works on
several clusters at once (0 all done, 3 some failed; one cluster alone
keeps its own error's code)."""

from __future__ import annotations

from rlkit.cli import output
from rlkit.errors import PartialFailureError, RlkitError, WorkFailedError


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
