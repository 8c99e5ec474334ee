"""Run the real ``rlkit`` command, as a user would, in the test's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
