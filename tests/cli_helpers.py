"""Run the real ``rlkit`` command, as a user would, in the test's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rlkit.clusters import local
from rlkit.clusters.records import ClusterRecord, list_records

RLKIT = str(Path(sys.executable).parent / "rlkit")


def run_rlkit(*args: str, timeout: float = 180, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``rlkit ARGS`` with stdin closed (no terminal: prompts must not hang)."""
    env = {**os.environ, **(extra_env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [RLKIT, *args], check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line a failed command printed (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@contextmanager
def launched_local_clusters(base: Path, *launch_args: str, timeout: float = 180,
                            shell_env: dict[str, str] | None = None) -> Iterator[tuple[dict[str, str], list[ClusterRecord]]]:
    """``rlkit launch local LAUNCH_ARGS`` with rlkit's registry under ``base``
    (and ``shell_env`` set in the launching shell alone); yields (env, records).

    Every cluster in that registry is stopped on the way out, even when a test failed.
    """
    env = {"RLKIT_HOME": str(base / "home"), "RLKIT_RAY_ADDRESS_FILE": str(base / "ray_address")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("RAY_ADDRESS", raising=False)
        try:
            result = run_rlkit("launch", "local", *launch_args, "--json", timeout=timeout, extra_env=shell_env)
            assert result.returncode == 0, result.stderr
            yield env, [ClusterRecord.from_dict(r) for r in json.loads(result.stdout)]
        finally:
            for record in list_records():
                local.stop(record)
