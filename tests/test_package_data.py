"""The cluster templates ship in rlkit's wheel: an installed rlkit, away
from the source tree, finds and loads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_an_installed_wheel_finds_the_onprem_template(tmp_path: Path) -> None:
    source, wheels, target = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
    # A copy to build from: a build writes build/ and egg-info into the tree it builds.
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # The build backend that `pip wheel --no-build-isolation` calls, called
    # directly: offline, and without pip's seconds of start-up.
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", build, str(wheels)], cwd=source, capture_output=True, text=True,
                           timeout=240, check=False)
    assert built.returncode == 0, built.stderr
    # Installing a pure-Python wheel is unpacking it into site-packages.
    with zipfile.ZipFile(wheels / built.stdout.splitlines()[-1]) as wheel:
        wheel.extractall(target)
    # The installed copy first on the path, run from elsewhere: the source tree is out of reach.
    probe = ("import rlkit, rlkit.clusters.onprem as onprem\n"
             "print(rlkit.__file__); print(onprem.DEFAULT_TEMPLATE)\n"
             "print(sorted(onprem.load_template(onprem.DEFAULT_TEMPLATE)))\n")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(target)}, check=False)
    assert ran.returncode == 0, ran.stderr
    module, template, keys = ran.stdout.splitlines()
    assert Path(module).is_relative_to(target) and Path(template) == target / "rlkit" / "cluster_configs" / "onprem.yaml"
    assert "head_start_ray_commands" in keys and "worker_start_ray_commands" in keys
