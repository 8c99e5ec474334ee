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
from dataclasses import dataclass, field
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from typing import TYPE_CHECKING

from rlkit import paths
from rlkit.errors import BadInputError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Besides Ray's own (.git, .venv, venv, __pycache__): what a project holds
# that a job does not need. Anchored at the top, so that a package that
# happens to have a `runs` module still travels.
EXCLUDES = ("/runs/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".hypothesis/", ".tox/", ".nox/",
            "*.egg-info/", ".ipynb_checkpoints/", "*.pyc")

# Files that hold credentials, matched at any depth as .gitignore lines are
# (a trailing / for a directory): they stay home unless `--include` names
# them. Token files by name only (`token`, `*.token`, `*_token`): a looser
# `*token*` would leave a tokenizer behind.
SECRETS = (".env", ".env.*", ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc",
           "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx",
           ".ssh/", ".aws/", ".gnupg/", ".kube/", ".docker/", ".azure/", "**/.config/gcloud/",
           "token", "*.token", "*_token", ".rlkit/")

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
    ``module_names`` at its top), sent as its py_modules. ``left_out``:
    the secrets kept home, as ``left_out_summary`` names them."""

    source: Path
    working_dir: Package
    modules: Package
    module_names: list[str]
    left_out: list[str] = field(default_factory=list)


def upload_limit() -> int:
    """The largest body a Ray dashboard accepts, hence the largest package."""
    from ray._private.ray_constants import DASHBOARD_CLIENT_MAX_SIZE

    return DASHBOARD_CLIENT_MAX_SIZE


@contextmanager
def packed(working_dir: Path, include: tuple[str, ...] = ()) -> Iterator[Shipment]:
    """Pack ``working_dir`` and the shipped modules into temporary zips,
    deleted on exit; files that match ``SECRETS`` stay out unless a pattern
    of ``include`` takes them back. ``BadInputError`` when the working dir
    is not one, holds rlkit's home, or packs to more than the upload limit."""
    source = working_dir.resolve()
    if not source.is_dir():
        raise BadInputError(f"working dir {working_dir} is not a directory", "pass --working-dir DIR")
    _refuse_rlkit_home(source)
    _check_patterns(include)
    with tempfile.TemporaryDirectory(prefix="rlkit-submit-") as tmp:
        work, left_out = _pack_working_dir(source, Path(tmp) / "working_dir.zip", include)
        modules, names = _pack_modules(Path(tmp) / "rlkit_modules.zip")
        yield Shipment(source, work, modules, names, left_out)


@contextmanager
def packed_modules() -> Iterator[Package]:
    """The shipped modules alone, in a temporary zip deleted on exit: for a
    job that needs rlkit and nothing of the working dir."""
    with tempfile.TemporaryDirectory(prefix="rlkit-modules-") as tmp:
        yield _pack_modules(Path(tmp) / "rlkit_modules.zip")[0]


def modules_uri(client: JobSubmissionClient, modules: Package) -> str:
    """The cluster's URI for ``modules``, uploaded first when it lacks them.
    Ray's client uploads a zip given as working_dir itself, but takes
    py_modules only as directories (which it would hash and zip again for
    every cluster) or as URIs of packages the cluster has."""
    return client._upload_package_if_needed(str(modules.path), include_gitignore=False, is_file=True)


def _check_patterns(include: tuple[str, ...]) -> None:
    """Each ``--include`` is one .gitignore line that takes files back."""
    from ray._private.thirdparty.pathspec import PathSpec

    for pattern in include:
        try:
            if not pattern.strip() or pattern.startswith(("!", "#")):
                raise ValueError
            PathSpec.from_lines("gitwildmatch", [pattern])
        except Exception:  # noqa: BLE001 - pathspec fails on a malformed pattern in many ways
            raise BadInputError(f"--include {pattern!r} is not a file pattern",
                                "write it as a .gitignore line, e.g. --include .env.example or --include 'keys/*.pem'") from None


def _refuse_rlkit_home(source: Path) -> None:
    """rlkit's home holds the token of every cluster it launched: no
    ``--include`` ships it, wherever it sits in the working dir."""
    home = paths.rlkit_home().resolve()
    if home.exists() and (home == source or source in home.parents or home in source.parents):
        raise BadInputError(
            f"working dir {source} and rlkit's home {home} (the clusters' tokens) overlap: it never travels with a job",
            "pass a --working-dir without it, or move RLKIT_HOME elsewhere",
        )


def _pack_working_dir(source: Path, path: Path, include: tuple[str, ...]) -> tuple[Package, list[str]]:
    """As Ray packs a working dir (its default excludes, .gitignore and
    .rayignore honoured), less rlkit's excludes, virtual environments and
    secrets; with the paths of the secrets left out."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import create_package

    # Ray matches all these as one .gitignore: a later "!PATTERN" takes
    # back what an earlier line left out.
    plain = [*get_runtime_env_default_excludes(), *EXCLUDES, *_virtualenvs(source)]
    taken_back = [f"!{pattern}" for pattern in include]
    excludes = [*plain, *SECRETS, *taken_back]
    left_out = _secrets_left_out(source, excludes, [*plain, *taken_back])
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
    return package, left_out


def _secrets_left_out(source: Path, excludes: list[str], without_secrets: list[str]) -> list[str]:
    """The paths under ``source`` that ``excludes`` leaves out and
    ``without_secrets`` would not, walked as Ray walks (a directory that
    matches is skipped whole; a directory's path has no trailing /)."""
    from ray._private.thirdparty.pathspec import PathSpec

    spec, plain = PathSpec.from_lines("gitwildmatch", excludes), PathSpec.from_lines("gitwildmatch", without_secrets)
    found = []
    for directory, subdirs, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        kept = []
        for name in sorted(subdirs):
            entry = (relative / name).as_posix()
            if not spec.match_file(entry):
                kept.append(name)
            elif not plain.match_file(entry):
                found.append(entry + "/")
        subdirs[:] = kept
        found += [entry for entry in ((relative / name).as_posix() for name in sorted(files))
                  if spec.match_file(entry) and not plain.match_file(entry)]
    return found


_SHOWN = 8


def left_out_note(left_out: list[str]) -> str:
    """The one line that tells a user which secrets stayed home, and how to send one."""
    return f"left out of the working dir as secrets: {left_out_summary(left_out)} (--include PATTERN sends one)"


def left_out_summary(left_out: list[str]) -> str:
    """The secrets left out, in one short line: a directory that matches
    ``SECRETS`` (``.ssh/``) once, with the number of its files."""
    from ray._private.thirdparty.pathspec import PathSpec

    secret = PathSpec.from_lines("gitwildmatch", SECRETS)
    shown: dict[str, int] = {}
    for entry in left_out:
        parts = entry.rstrip("/").split("/")
        prefixes = ("/".join(parts[:i]) + "/" for i in range(1, len(parts)))
        shown_as = next((p for p in prefixes if secret.match_file(p)), entry)
        shown[shown_as] = shown.get(shown_as, 0) + 1
    named = [name if count == 1 else f"{name} ({count} files)" for name, count in shown.items()]
    more = f" and {len(named) - _SHOWN} more (`--dry-run --json` lists them)" if len(named) > _SHOWN else ""
    return ", ".join(named[:_SHOWN]) + more


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
