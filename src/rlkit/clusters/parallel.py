"""Run one function per cluster at the same time, with an overall deadline.

Daemon threads rather than a ThreadPoolExecutor: the interpreter joins an
executor's threads at exit, so one hung connection (a DNS lookup ignores
socket timeouts) would hold the command past its deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
I = TypeVar("I")


@dataclass
class Outcome(Generic[T]):
    """The result of one call: ``value``, or the ``error`` it raised, or
    neither with ``finished`` False when the deadline passed first."""

    value: T | None = None
    error: Exception | None = None
    finished: bool = False


def run_parallel(fn: Callable[[I], T], items: Sequence[I], timeout: float | None = None) -> list[Outcome[T]]:
    """Call ``fn`` on every item in its own thread; outcomes in item order."""
    outcomes: list[Outcome[T]] = [Outcome() for _ in items]

    def call(index: int, item: I) -> None:
        try:
            outcomes[index].value = fn(item)
        except Exception as err:  # noqa: BLE001 - handed to the caller, who decides
            outcomes[index].error = err
        outcomes[index].finished = True

    threads = [threading.Thread(target=call, args=(i, item), daemon=True) for i, item in enumerate(items)]
    for thread in threads:
        thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return outcomes
