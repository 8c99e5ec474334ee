"""The layers of DESIGN.md hold: imports only point down.

cli > views > sweep > jobs > train, clusters > config, errors, paths, files.
Every import in every module counts, those inside functions and under
TYPE_CHECKING too: a lazy import up the layers is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Package (or module) -> (rank, group): a module may import a lower rank, or
# its own group; train and clusters share a rank and do not import each other.
LAYERS = {
    "rlkit.cli": (5, "cli"),
    "rlkit.__main__": (5, "cli"),
    "rlkit.views": (4, "views"),
    "rlkit.sweep": (3, "sweep"),
    "rlkit.jobs": (2, "jobs"),
    "rlkit.train": (1, "train"),
    "rlkit.clusters": (1, "clusters"),
    "rlkit.config": (0, "base"),
    "rlkit.errors": (0, "base"),
    "rlkit.paths": (0, "base"),
    "rlkit.files": (0, "base"),
    "rlkit": (0, "base"),
}
# The one lateral import: an embedded Ray of `rlkit train` is started as a
# local head is (loopback only, stopped by the reaper's marker), and those
# process rules are the clusters package's to own.
ALLOWED = {
    ("rlkit.train.session", "rlkit.clusters.local"),
    ("rlkit.train.session", "rlkit.clusters.procs"),
    ("rlkit.train.session", "rlkit.clusters.reaper"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> tuple[int, str]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__} (and to DESIGN.md)")


def is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imported(tree: ast.AST, importer: str) -> set[str]:
    """The rlkit modules that ``importer`` imports, each as precisely as it names it."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = importer.split(".")[: -node.level] if importer else []
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full) else base)
    return {m for m in found if m == "rlkit" or m.startswith("rlkit.")}


def violations() -> list[str]:
    bad = []
    for path in sorted((SRC / "rlkit").rglob("*.py")):
        importer = module_name(path)
        rank, group = layer(importer)
        for target in sorted(imported(ast.parse(path.read_text(encoding="utf-8")), importer)):
            target_rank, target_group = layer(target)
            upward = target_rank > rank or (target_rank == rank and target_group != group and rank > 0)
            if upward and (importer, target) not in ALLOWED:
                bad.append(f"{importer} ({group}) imports {target} ({target_group})")
    return bad


def test_imports_only_point_down_the_layers() -> None:
    assert violations() == []

