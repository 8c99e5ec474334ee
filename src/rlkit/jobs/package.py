"""Code that travels with a job: the working dir, and rlkit itself with the
pure-Python packages its command line needs beyond Ray, so that a cluster
with Ray, torch and the environments runs ``python -m rlkit train`` without
rlkit installed.

Both are packed once per submission, whatever the number of clusters:
hashing and zipping are CPU work that threads would only take turns at.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from rlkit.errors import BadInputError

# Besides Ray's own (.git, .venv, venv, __pycache__): what a project holds
# that a job does not need. Anchored at the top, so that a package that
# happens to have a `runs` module still travels.
EXCLUDES = ("/runs/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".hypothesis/", ".tox/", ".nox/",
            "*.egg-info/", ".ipynb_checkpoints/", "*.pyc")

# rlkit's command line and what it imports that Ray does not install (Ray
# brings click, pydantic, pyyaml, filelock). All pure Python.
SHIPPED_MODULES = ("rlkit", "typer", "rich", "pygments", "markdown_it", "mdurl", "shellingham", "annotated_doc")

# Ray warns of each large file as it packs; the size check below says more.
_quiet = logging.getLogger(__name__ + ".ray")
_quiet.setLevel(logging.ERROR)


@dataclass(frozen=True)
class Package:
    """One zip: ``files`` counts its entries."""

    path: Path
    size: int
    files: int


@dataclass(frozen=True)
class Shipment:
    """What travels with every job of a submission: the working dir, sent
    as the job's working_dir, and ``modules`` (one zip holding each of
    ``module_names`` at its top), sent as its py_modules."""

    source: Path
    working_dir: Package
    modules: Package
    module_names: list[str]


def upload_limit() -> int:
    """The largest body a Ray dashboard accepts, hence the largest package."""
    from ray._private.ray_constants import DASHBOARD_CLIENT_MAX_SIZE

    return DASHBOARD_CLIENT_MAX_SIZE


@contextmanager
def packed(working_dir: Path) -> Iterator[Shipment]:
    """Pack ``working_dir`` and the shipped modules into temporary zips,
    deleted on exit. ``BadInputError`` when the working dir is not one, or
    packs to more than the upload limit."""
    source = working_dir.resolve()
    if not source.is_dir():
        raise BadInputError(f"working dir {working_dir} is not a directory", "pass --working-dir DIR")
    with tempfile.TemporaryDirectory(prefix="rlkit-submit-") as tmp:
        work = _pack_working_dir(source, Path(tmp) / "working_dir.zip")
        modules, names = _pack_modules(Path(tmp) / "rlkit_modules.zip")
        yield Shipment(source, work, modules, names)


def _pack_working_dir(source: Path, path: Path) -> Package:
    """As Ray packs a working dir (its default excludes, .gitignore and
    .rayignore honoured), less rlkit's excludes and virtual environments."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import create_package

    excludes = [*get_runtime_env_default_excludes(), *EXCLUDES, *_virtualenvs(source)]
    create_package(str(source), path, include_gitignore=True, excludes=excludes, logger=_quiet)
    with ZipFile(path) as archive:
        entries = archive.infolist()
    package = Package(path, path.stat().st_size, len(entries))
    limit = upload_limit()
    if package.size > limit:
        largest = sorted(entries, key=lambda e: e.compress_size, reverse=True)[:3]
        named = ", ".join(f"{e.filename} {_mib(e.compress_size)}" for e in largest if e.compress_size >= 2**20)
        raise BadInputError(
            f"working dir {source} packs to {_mib(package.size)}, over Ray's upload limit of {_mib(limit)} "
            f"({f'largest: {named}' if named else f'{len(entries)} files'})",
            "list big files in .gitignore or .rayignore, or pass a smaller --working-dir",
        )
    return package


def _virtualenvs(root: Path) -> list[str]:
    """Exclude patterns for every virtual environment under ``root``,
    whatever its name (a venv holds its whole site-packages)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if "pyvenv.cfg" in files and directory != str(root):
            found.append("/" + Path(directory).relative_to(root).as_posix() + "/")
            subdirs.clear()
        subdirs[:] = [d for d in subdirs if d not in (".git", "node_modules")]
    return found


def _pack_modules(path: Path) -> tuple[Package, list[str]]:
    """The shipped modules in one zip, byte for byte the same while their
    files are: Ray names a package by its hash, so a cluster that has it
    from an earlier submission is not sent it again."""
    names, count = [], 0
    # The fastest compression: packing is paid on every submission, the
    # upload only by a cluster that lacks this very bundle.
    with ZipFile(path, "w") as archive:
        for name in SHIPPED_MODULES:
            spec = importlib.util.find_spec(name)
            # A module that is not installed here is not needed by the
            # versions installed here (typer only lately needs annotated_doc).
            if spec is None or not spec.submodule_search_locations:
                continue
            names.append(name)
            root = Path(next(iter(spec.submodule_search_locations)))
            for directory, subdirs, files in os.walk(root):
                subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
                for file in sorted(f for f in files if not f.endswith(".pyc")):
                    full = Path(directory) / file
                    entry = ZipInfo(f"{name}/{full.relative_to(root).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
                    entry.external_attr = 0o644 << 16
                    archive.writestr(entry, full.read_bytes(), ZIP_DEFLATED, compresslevel=1)
                    count += 1
    return Package(path, path.stat().st_size, count), names


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def describe_size(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < 2**20 else _mib(size)
