"""The launch sequence, the same for every provider.

Under the name's lock: claim the name (a hand-written entry or another
provider's cluster keeps it), leave a cluster that is up as it is, clear
a stopped one, start, register; a cluster that started but could not be
registered is discarded, since a cluster nobody can find by name is one
nobody stops. Several specs start in parallel and register in the order
given, so NAME-1 comes first in the address file (and first for
``awk | head -n 1``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlkit.clusters import locks, registry
from rlkit.clusters.parallel import Outcome, run_parallel
from rlkit.clusters.provider import Progress, Provider, Spec
from rlkit.clusters.records import ClusterRecord
from rlkit.errors import RlkitError

# How long the already-up check gives a relaunched name's dashboard.
UP_CHECK_TIMEOUT_S = 3.0


@dataclass
class LaunchOutcome:
    """``already_up`` is True when the name was up and nothing was started."""

    record: ClusterRecord
    already_up: bool = False


def check_names(provider: Provider, specs: Sequence[Spec]) -> None:
    """Raise ``BadInputError`` if a name belongs to a cluster that is not
    one of ``provider``'s (checked again under each name's lock at launch)."""
    for spec in specs:
        registry.claim_name(spec.name, provider.name)


def launch(
    provider: Provider, spec: Spec, progress: Progress | None = None, *,
    timeout_s: float, lock_timeout_s: float | None = None,
) -> LaunchOutcome:
    """Start ``spec``'s cluster within ``timeout_s`` and register it, or do
    nothing if it is up already. Raises ``BadInputError`` when the name is
    not the provider's to take, ``RlkitError`` when the start fails (and
    then leaves nothing behind). ``lock_timeout_s`` (default ``timeout_s``)
    bounds the wait for another rlkit that launches or stops the name."""
    report = progress or _silent
    return _launch(provider, spec, report, timeout_s, lock_timeout_s or timeout_s, wait_turn=None)


def launch_many(
    provider: Provider, specs: Sequence[Spec], progress: Progress | None = None, *,
    timeout_s: float, lock_timeout_s: float | None = None,
) -> list[Outcome[LaunchOutcome]]:
    """Launch all specs at once; each outcome holds the result or the error."""
    report = progress or _silent
    registered = [threading.Event() for _ in specs]

    def one(index: int) -> LaunchOutcome:
        try:
            wait_turn = registered[index - 1].wait if index else None
            return _launch(provider, specs[index], report, timeout_s, lock_timeout_s or timeout_s, wait_turn)
        finally:
            registered[index].set()

    return run_parallel(one, list(range(len(specs))))


def _silent(_name: str, _stage: str) -> None:
    pass


def _launch(
    provider: Provider, spec: Spec, report: Progress, timeout_s: float, lock_timeout_s: float,
    wait_turn: Callable[[], object] | None,
) -> LaunchOutcome:
    with locks.cluster_lock(spec.name, lock_timeout_s):
        previous = registry.claim_name(spec.name, provider.name)
        if previous and previous.state == "up":
            previous = _reconnected(provider, previous)
            if provider.is_up(previous, UP_CHECK_TIMEOUT_S):
                report(spec.name, "already up")
                return LaunchOutcome(previous, already_up=True)
        if previous:
            report(spec.name, "clearing the stopped cluster")
            provider.stop(previous)
        record = provider.start(spec, report, time.monotonic() + timeout_s)
        try:
            if wait_turn:
                report(spec.name, "registering")
                wait_turn()
            registry.register(record, replaces=previous.address if previous else None)
        except BaseException:
            provider.discard(record)
            raise
        report(spec.name, "up")
        return LaunchOutcome(record)


def _reconnected(provider: Provider, record: ClusterRecord) -> ClusterRecord:
    """``record`` with its way to the dashboard opened again if it can be;
    as it is if not (then it is not up, and is launched again)."""
    try:
        return provider.reconnect(record) or record
    except RlkitError:
        return record
