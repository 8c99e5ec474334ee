"""Learning curves drawn for ``rlkit runs --plot``: in the terminal, or as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

    from rlkit.train.runs import Curve

# Told apart by marker where there is no colour (a pipe, a log file).
MARKERS = "*o+x#@%&"
STYLES = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_cyan")
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
X_LABELS = {"steps": "env steps", "time": "wall time (s)"}
HEIGHT = 16
PNG_PANEL_PX = (640, 480)
PNG_DPI = 100


def _xs(curve: Curve, x: str) -> list[float]:
    return [float(s) for s in curve.steps] if x == "steps" else curve.time_s


def _points(curve: Curve, x: str) -> list[tuple[float, float]]:
    return [(px, y) for px, y in zip(_xs(curve, x), curve.rolling_return) if y is not None]


def _label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def text_plot(curves: list[Curve], x: str, width: int) -> Text:
    """Rolling return against ``x``, one marker and colour per run, axes labelled with their ranges."""
    from rich.text import Text

    series = [_points(c, x) for c in curves]
    every = [p for s in series for p in s]
    plot = Text()
    plot.append(f"rolling return vs {X_LABELS[x]}\n", style="bold")
    if not every:
        # Episodic returns came before any rolling one: too early in the run to draw.
        plot.append("no rolling return logged yet\n", style="dim")
        return plot
    x_lo, x_hi = min(p[0] for p in every), max(p[0] for p in every)
    y_lo, y_hi = min(p[1] for p in every), max(p[1] for p in every)
    y_labels = [_label(y_hi), _label((y_lo + y_hi) / 2), _label(y_lo)]
    margin = max(len(label) for label in y_labels) + 1
    cols = max(20, min(width, 120) - margin - 1)
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(HEIGHT)]

    def cell(px: float, py: float) -> tuple[int, int]:
        col = round((px - x_lo) / (x_hi - x_lo) * (cols - 1)) if x_hi > x_lo else 0
        row = round((py - y_lo) / (y_hi - y_lo) * (HEIGHT - 1)) if y_hi > y_lo else HEIGHT // 2
        return col, HEIGHT - 1 - row

    for i, points in enumerate(series):
        mark = (MARKERS[i % len(MARKERS)], STYLES[i % len(STYLES)])
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[-1:]):
            c0, _ = cell(x0, y0)
            c1, _ = cell(x1, y1)
            # Every column between two logged points gets one, so a run reads as a line.
            for col in range(c0, max(c0, c1) + 1):
                t = (col - c0) / (c1 - c0) if c1 > c0 else 0.0
                _, row = cell(x0, y0 + t * (y1 - y0))
                grid[row][col] = mark
    label_rows = {0: y_labels[0], HEIGHT // 2: y_labels[1], HEIGHT - 1: y_labels[2]}
    for r, line in enumerate(grid):
        plot.append(f"{label_rows.get(r, ''):>{margin - 1}} │")
        for char, style in line:
            plot.append(char, style=style)
        plot.append("\n")
    plot.append(" " * (margin - 1) + " └" + "─" * cols + "\n")
    lo, hi, name = _label(x_lo), _label(x_hi), X_LABELS[x]
    gap = max(1, cols - len(lo) - len(hi) - len(name))
    plot.append(" " * (margin + 1) + lo + " " * (gap // 2) + name + " " * (gap - gap // 2) + hi + "\n")
    for i, (curve, points) in enumerate(zip(curves, series)):
        last = f"{points[-1][1]:.1f}" if points else "-"
        plot.append(f"  {MARKERS[i % len(MARKERS)]} ", style=STYLES[i % len(STYLES)])
        plot.append(f"{curve.name}  (last {last})\n")
    return plot


def write_png(curves: list[Curve], path: Path, axes: list[str]) -> None:
    """One panel per x axis: rolling return as a line, each update's episodic return faint behind it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = PNG_PANEL_PX
    figure = Figure(figsize=(width * len(axes) / PNG_DPI, height / PNG_DPI), dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    for panel, x in zip(figure.subplots(1, len(axes), squeeze=False)[0], axes):
        for i, curve in enumerate(curves):
            colour = COLOURS[i % len(COLOURS)]
            xs = _xs(curve, x)
            episodic = [(px, y) for px, y in zip(xs, curve.episodic_return) if y is not None]
            if episodic:
                panel.plot(*zip(*episodic), color=colour, alpha=0.25, linewidth=0.8)
            rolling = _points(curve, x)
            if rolling:
                panel.plot(*zip(*rolling), color=colour, linewidth=1.8, label=curve.name)
        panel.set_xlabel(X_LABELS[x])
        panel.set_ylabel("return (line: rolling; faint: per update)")
        panel.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small")
    figure.savefig(path, format="png", dpi=PNG_DPI)
