"""Console helpers shared by the commands: one stdout, one stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def error(message: str) -> None:
    """Print one error line to stderr (no markup interpretation of the text)."""
    # soft_wrap: the message stays one line whatever the terminal width.
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, style="dim", soft_wrap=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
