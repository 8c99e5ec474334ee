"""The job that ``rlkit fetch`` sends: ``python -m rlkit.jobs.fetch_agent``.

It runs on the node where the fetched job's driver ran (the client pins
it there with Ray's node-id label), so the run directory is a local
directory to it: no Ray task, no SSH. It compares what is there with the
client's manifest (path, size, sha256; in ``MANIFEST_ENV``) and writes,
to stdout and so to the job's log, framed lines for each file that
differs::

    rlkit-fetch plan {"send": [[PATH, SIZE], ...], "same": N}
    rlkit-fetch data INDEX OFFSET BASE64      (one per chunk, in order)
    rlkit-fetch done INDEX SIZE SHA256        (what was sent, hashed as sent)
    rlkit-fetch gone INDEX                    (removed before it was sent)
    rlkit-fetch end
    rlkit-fetch missing PATH                  (no runs dir there, yet or at all)

Paths are relative to the job's runs dir, with ``/``; the client decides
what it accepts. Standard library only: the agent must start fast.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import zlib
from pathlib import Path

PREFIX = "rlkit-fetch "
MANIFEST_ENV = "RLKIT_FETCH_MANIFEST"
CHECKPOINT_CHOICES = ("latest", "all", "none")
# Raw bytes per data line: 64 KiB once in base64.
CHUNK = 48 * 1024
# train.checkpoint's names, spelt here so that the agent imports nothing of rlkit.
_CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"ckpt-(\d+)\.pt")
_SIDECAR = ".json"


def encode_manifest(manifest: dict[str, tuple[int, str]]) -> str:
    """``{path: (size, sha256)}`` as the text of ``MANIFEST_ENV``."""
    return base64.b64encode(zlib.compress(json.dumps(manifest, separators=(",", ":")).encode())).decode()


def decode_manifest(text: str) -> dict[str, tuple[int, str]]:
    if not text:
        return {}
    data = json.loads(zlib.decompress(base64.b64decode(text)))
    return {str(path): (int(size), str(sha)) for path, (size, sha) in data.items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _transient(name: str) -> bool:
    # files.atomic_write's sibling while a file is replaced: never complete.
    return name.startswith(".") and name.endswith(".tmp")


def run_files(runs_dir: Path, checkpoints: str) -> list[str]:
    """The files under ``runs_dir`` to consider, relative, sorted; of each
    run's checkpoints, all, none, or the newest one with its sidecar (a
    checkpoint without one is unfinished) and the sidecar."""
    found = []
    for root, dirs, files in os.walk(runs_dir):
        dirs.sort()
        rel = Path(root).relative_to(runs_dir)
        in_checkpoints = rel.name == _CHECKPOINT_DIR
        names = [n for n in sorted(files) if not _transient(n) and not Path(root, n).is_symlink()]
        if in_checkpoints and checkpoints == "none":
            continue
        if in_checkpoints and checkpoints == "latest":
            complete = [n for n in names if _CHECKPOINT.fullmatch(n) and n + _SIDECAR in names]
            names = [complete[-1], complete[-1] + _SIDECAR] if complete else []
        found += [(rel / n).as_posix() for n in names]
    return found


def _say(kind: str, *words: object) -> None:
    sys.stdout.write(PREFIX + " ".join([kind, *map(str, words)]) + "\n")


def send(runs_dir: Path, checkpoints: str, manifest: dict[str, tuple[int, str]]) -> None:
    """Write the plan and the frames of every file that differs from ``manifest``."""
    send_list: list[tuple[str, int]] = []
    same = 0
    for rel in run_files(runs_dir, checkpoints):
        path = runs_dir / rel
        try:
            size = path.stat().st_size
            have = manifest.get(rel)
            if have is not None and have[0] == size and have[1] == sha256_of(path):
                same += 1
                continue
        except FileNotFoundError:
            continue
        send_list.append((rel, size))
    _say("plan", json.dumps({"send": send_list, "same": same}, separators=(",", ":")))
    for index, (rel, _) in enumerate(send_list):
        digest, offset = hashlib.sha256(), 0
        try:
            with (runs_dir / rel).open("rb") as f:
                while chunk := f.read(CHUNK):
                    _say("data", index, offset, base64.b64encode(chunk).decode())
                    digest.update(chunk)
                    offset += len(chunk)
        except FileNotFoundError:
            _say("gone", index)
            continue
        _say("done", index, offset, digest.hexdigest())
    _say("end")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlkit.jobs.fetch_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--checkpoints", choices=CHECKPOINT_CHOICES, default="latest")
    args = parser.parse_args(argv)
    # The job's metadata keeps the dir as the job saw it: ${HOME}/... for a remote cluster.
    runs_dir = Path(os.path.expanduser(os.path.expandvars(args.runs_dir)))
    if not runs_dir.is_dir():
        _say("missing", runs_dir)
        sys.stdout.flush()
        return
    send(runs_dir, args.checkpoints, decode_manifest(os.environ.get(MANIFEST_ENV, "")))


if __name__ == "__main__":
    main()
