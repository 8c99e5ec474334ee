"""The one interface every provider implements, and how to get one by name.

A provider is the object ``provider`` in the module ``rlkit.clusters.NAME``
(``local``, ``onprem``, ``kuberay``), imported on demand so that only the
provider in use loads its dependencies. What is the same for all of them
(the lock, the name's claim, registration, undoing a failed start) lives
in ``launching``; a provider knows only its own clusters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rlkit.clusters.records import ClusterRecord
from rlkit.errors import WorkFailedError

PROVIDERS = ("local", "onprem", "kuberay")
# Where runs land on a cluster that is not on this machine: the home of the
# user Ray runs as, on the node that runs the job's driver (Ray expands
# ${VAR} in a job's env vars there).
REMOTE_RUNS_BASE = "${HOME}/rlkit-runs"

# Called with (cluster name, stage) as a launch goes on.
Progress = Callable[[str, str], None]


@dataclass
class StopResult:
    """``stopped`` counts what was stopped, in ``unit`` (processes, nodes);
    ``already_gone`` is True when nothing ran any more."""

    name: str
    stopped: int
    already_gone: bool
    unit: str = "processes"
    note: str = ""


class Spec(Protocol):
    """What a provider starts: each provider has its own dataclass; the
    launch sequence needs only the cluster's name."""

    @property
    def name(self) -> str: ...


@runtime_checkable
class Provider(Protocol):
    """One provider's clusters: start and stop them, tell whether one is up."""

    name: str

    def plan(self, spec: Any) -> list[str]:
        """The lines ``--dry-run`` prints for ``spec``; no side effects."""
        ...

    def start(self, spec: Any, report: Progress, deadline: float) -> ClusterRecord:
        """Bring the cluster up by ``deadline`` (``time.monotonic``) and return
        its record, state "up", not yet registered; on failure leave nothing
        behind and raise ``RlkitError``."""
        ...

    def discard(self, record: ClusterRecord) -> None:
        """Undo a ``start`` whose cluster could not be registered."""
        ...

    def is_up(self, record: ClusterRecord, timeout: float) -> bool:
        """Whether the cluster takes jobs now (status's rule for UP). Every
        provider reaches a dashboard, so one rule serves them all; a
        provider class that subclasses Provider inherits it."""
        from rlkit.clusters import health

        return health.record_takes_jobs(record, timeout)

    def describe_stop(self, record: ClusterRecord) -> list[str]:
        """What stopping the cluster ends, for the teardown prompt."""
        ...

    def stop(self, record: ClusterRecord) -> StopResult:
        """Stop the cluster and remove what rlkit keeps for it here and on its
        hosts (not its record or address line); stopping twice is fine."""
        ...

    def reconnect(self, record: ClusterRecord) -> ClusterRecord | None:
        """Re-open this provider's way to the dashboard (an SSH tunnel, a
        kubectl port-forward) if it is gone, and return the updated record;
        None when nothing needed reopening. Raises ``RlkitError`` when it
        cannot be reopened."""
        ...

    def runs_base(self, working_dir: Path) -> str:
        """Where a job's runs land by default, for a job sent from ``working_dir``."""
        ...


def get_provider(name: str) -> Provider:
    """The provider called ``name``; ``WorkFailedError`` for one this rlkit lacks."""
    if name not in PROVIDERS:
        raise WorkFailedError(f"unknown provider {name!r}")
    try:
        module = importlib.import_module(f"rlkit.clusters.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"rlkit.clusters.{name}":
            raise
        module = None
    provider = getattr(module, "provider", None)
    if provider is None:
        raise WorkFailedError(f"rlkit cannot stop {name} clusters yet")
    return provider  # type: ignore[no-any-return]


def provider_for(record: ClusterRecord) -> Provider:
    """The provider that launched ``record``'s cluster; errors name the cluster."""
    try:
        return get_provider(record.provider)
    except WorkFailedError as err:
        detail = f"{err.message} in rlkit's record" if record.provider not in PROVIDERS else err.message
        raise WorkFailedError(f"{record.name}: {detail}") from None
