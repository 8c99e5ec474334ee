"""Checks for numeric options that several commands share, as typer callbacks.

typer parses ``inf`` and ``nan`` as floats, and its ranges let ``nan`` through
(every comparison with it is false): a timeout of ``inf`` overflows the waits
below it, and a resource of ``nan`` reaches Ray. A callback's ``BadParameter``
becomes the usual one-line usage error, exit code 2.
"""

from __future__ import annotations

import math

import typer

# A week: longer waits are typing mistakes, and threading's waits overflow past ~292 years.
MAX_SECONDS = 7 * 24 * 3600.0
# More than any machine offers; Ray's resource arithmetic stays exact below it.
MAX_RESOURCE = 1_000_000.0


def seconds(value: float | None) -> float | None:
    """A duration: finite, above 0, at most a week."""
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise typer.BadParameter(f"{value:g} seconds: give a number above 0 and at most {MAX_SECONDS:,.0f} (a week)")
    return value


def resource(value: float | None) -> float | None:
    """An amount of CPUs or GPUs: finite and at most MAX_RESOURCE (the library
    that takes it refuses negative amounts, in its own words)."""
    if value is not None and not (math.isfinite(value) and value <= MAX_RESOURCE):
        raise typer.BadParameter(f"{value:g}: give a finite number, at most {MAX_RESOURCE:,.0f}")
    return value
