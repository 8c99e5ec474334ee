"""Shared fixtures: a real local Ray for in-process tests, isolated rlkit paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.fixture import kube  # noqa: F401  (stand-in Kubernetes API server and KubeRay operator)
from tests.testhosts_fixture import testhosts  # noqa: F401  (sshd test hosts in network namespaces)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never touch the user's ~/.ray_address or ~/.rlkit; and a test that runs
    the CLI in-process (which sets Ray's loopback mode in os.environ, as a
    CLI process should) leaves nothing behind for later tests' subprocesses."""
    saved = dict(os.environ)
    monkeypatch.setenv("RLKIT_HOME", str(tmp_path / "rlkit-home"))
    monkeypatch.setenv("RLKIT_RAY_ADDRESS_FILE", str(tmp_path / "ray_address"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One embedded Ray for the in-process training tests (train() reuses it)."""
    import ray

    # Its workers (Tune trials sign checkpoints there) outlive each test's
    # RLKIT_HOME, so they get one of the session's own, never the user's.
    workers_home = str(tmp_path_factory.mktemp("ray-workers-rlkit-home"))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": {"RLKIT_HOME": workers_home}})
    try:
        yield
    finally:
        ray.shutdown()
