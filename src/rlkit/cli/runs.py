"""``rlkit runs``: the runs on disk as a table, or their learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rlkit.cli import output
from rlkit.errors import BadInputError, WorkFailedError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rlkit.train.runs import RunInfo

_STATUS_STYLE = {"running": "cyan", "finished": "green", "interrupted": "yellow", "failed": "red", "unknown": "dim"}
X_AXES = ("steps", "time")


def _x_axis(value: str | None) -> str | None:
    if value is not None and value not in X_AXES:
        raise typer.BadParameter(f"{value}: choose steps or time")
    return value


def runs(
    targets: Optional[list[str]] = typer.Argument(
        None, metavar="[DIR | RUN...]",
        help="The runs directory to list (default: $RLKIT_RUNS_DIR, else ./runs); with --plot, the runs to plot: "
             "run directories, or names as the table shows them."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
    plot: bool = typer.Option(False, "--plot", help="Plot the learning curves of the RUNs instead."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="With --plot: write a PNG here instead of drawing in the terminal."),
    x: Optional[str] = typer.Option(None, "--x", metavar="steps|time", callback=_x_axis,
                                    help="With --plot: against env steps or wall time (default: the PNG has both; "
                                         "the terminal plot, steps)."),
) -> int:
    """List the training runs under a runs directory, newest first: env, algorithm, status
    (running, finished, interrupted, failed), steps, wall time, last rolling return, where it ran.

    Examples:

        rlkit runs

        rlkit runs runs/ --json

        rlkit runs --plot ppo_cartpole-20261202-080000 runs/ppo_cartpole-20261202-081500

        rlkit runs --plot RUN1 RUN2 -o curves.png
    """
    from rlkit.train import runs as runs_lib

    targets = targets or []
    if plot:
        if as_json:
            raise BadInputError("--plot and --json do not go together", "`rlkit runs --json` lists the runs' numbers")
        if not targets:
            raise BadInputError("--plot needs at least one RUN", "e.g. rlkit runs --plot RUN1 RUN2 (names from `rlkit runs`)")
        return _plot(targets, out, x)
    if out is not None or x is not None:
        raise BadInputError(f"{'-o' if out is not None else '--x'} goes with --plot", "e.g. rlkit runs --plot RUN -o curves.png")
    if len(targets) > 1:
        raise BadInputError(f"give one runs directory, not {len(targets)}", "to plot several runs: rlkit runs --plot RUN...")
    root = Path(targets[0]) if targets else runs_lib.default_root()
    if not targets and not root.exists():
        # No run trained here yet: nothing to list, which is no error.
        found: list[RunInfo] = []
    else:
        found = runs_lib.list_runs(root)
    if as_json:
        output.print_json([r.to_dict() for r in found])
    elif not found:
        output.console.print(f"No runs under {root}. Train one with `rlkit train configs/ppo_cartpole.yaml`.",
                             markup=False, highlight=False, soft_wrap=True)
    else:
        output.console.print(render(found))
    return 0


def render(found: list[RunInfo]) -> RenderableType:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rows = [(r.name, r.env or "-", r.algorithm or "-", r.status, f"{r.steps:,}", _duration(r.wall_s),
             "-" if r.rolling_return is None else f"{r.rolling_return:.1f}", r.where or "-") for r in found]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for i, column in enumerate(("NAME", "ENV", "ALGO", "STATUS", "STEPS", "WALL", "RETURN", "WHERE")):
        width = max(len(column), *(len(row[i]) for row in rows))
        # On a narrow terminal the name gives way (cut at its end), not the other columns.
        table.add_column(column, no_wrap=column != "NAME", justify="right" if column in ("STEPS", "WALL", "RETURN") else "left",
                         overflow="ellipsis", min_width=None if column == "NAME" else width)
    for row in rows:
        table.add_row(*row[:3], Text(row[3], style=_STATUS_STYLE.get(row[3], "")), *row[4:])
    notes = [Text.assemble((r.name, "red"), f": {r.detail}") for r in found if r.status == "failed"]
    notes += [Text.assemble((r.name, "yellow"), f": {r.skipped_lines} line(s) of metrics.jsonl are not records;"
                            " left out") for r in found if r.skipped_lines]
    return Group(table, *notes)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _plot(targets: list[str], out: Path | None, x: str | None) -> int:
    from rlkit.cli import curves
    from rlkit.train import runs as runs_lib

    if out is not None:
        if out.suffix.lower() != ".png":
            raise BadInputError(f"-o {out}: give a file name ending in .png")
        if not out.parent.is_dir():
            raise BadInputError(f"-o {out}: no directory {out.parent}")
    found = []
    for ref in targets:
        run_dir, note = runs_lib.resolve_run(ref)
        if note:
            output.note(note)
        found.append(runs_lib.read_curve(run_dir, ref if note else None))
    empty = [c.name for c in found if not c.steps]
    if len(empty) == len(found):
        raise WorkFailedError(f"nothing to plot: no returns logged yet in {', '.join(empty)}",
                              "a run logs its first return once an episode ends")
    for name in empty:
        output.note(f"{name}: no returns logged yet, left out")
    drawn = [c for c in found if c.steps]
    if out is not None:
        curves.write_png(drawn, out, [x] if x else list(X_AXES))
        output.console.print(f"wrote {out}", markup=False, highlight=False)
    else:
        output.console.print(curves.text_plot(drawn, x or "steps", output.console.width))
    return 0


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
