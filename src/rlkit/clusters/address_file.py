"""``~/.ray_address``: the list of clusters that Ray users keep by hand.

The format is the one people already write and read with
``awk '!/^#/' ~/.ray_address | head -n 1``::

    # Cluster: lab-a
    10.21.16.30:6379
    # Cluster: lab-b
    http://10.21.70.164:8265

A ``# Cluster: NAME`` comment names the next address; an address without one
is known by the address itself. A ``# Token: env`` (or ``# Token: FILE``)
line after ``# Cluster: NAME`` ties a token to that entry: the one Ray's CLI
takes from the environment (or the one in FILE). An entry without one gets
no token, so that a token from the shell reaches only the clusters tied to it. rlkit edits the file only under a lock and
by atomic rename, and touches only the lines of entries it wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from rlkit import paths
from rlkit.clusters.auth import ENV_TIE
from rlkit.files import atomic_write
from rlkit.errors import AddressFileError, WorkFailedError

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
LOCK_TIMEOUT_S = 30.0

FORMATS = "host:port (GCS, usually 6379), http(s)://host:port (dashboard, usually 8265) or ray://host:port"

_CLUSTER_LINE = re.compile(r"^#\s*cluster\s*:(.*)$", re.IGNORECASE)
_TOKEN_LINE = re.compile(r"^#\s*token\s*:(.*)$", re.IGNORECASE)
_ADDRESS = re.compile(
    r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
    r"(?::(?P<port>[0-9]*))?"
    r"(?P<path>/\S*)?$"
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ray": CLIENT_PORT}


@dataclass(frozen=True)
class RayAddress:
    """One address as Ray understands it.

    ``scheme`` is ``"gcs"`` for a bare ``host:port``, else ``http``, ``https``
    or ``ray``. ``path`` is a URL prefix, for a dashboard behind a proxy.
    """

    scheme: str
    host: str
    port: int
    path: str = ""

    def dashboard_url(self) -> str:
        """The base URL of the Job Submission API (the dashboard) for this address.

        A GCS or Ray Client address names the head node but not its dashboard:
        Ray's default dashboard port is assumed, as ``ray job submit`` users do.
        A bare ``host:8265`` is a dashboard written without its scheme.
        """
        if self.scheme in ("http", "https"):
            return f"{self.scheme}://{self.host}:{self.port}{self.path}"
        return f"http://{self.host}:{DASHBOARD_PORT}"

    def port_warning(self) -> str | None:
        """Why this address probably points at the wrong port, or None."""
        if self.scheme in ("http", "https") and self.port in (GCS_PORT, CLIENT_PORT):
            kind = "GCS" if self.port == GCS_PORT else "Ray Client"
            return (
                f"port {self.port} is Ray's {kind} port, not the dashboard: "
                f"write {self.scheme}://{self.host}:{DASHBOARD_PORT} (or {self.host}:{GCS_PORT})"
            )
        return None


def parse_address(text: str) -> RayAddress:
    """Parse one address; ``ValueError`` says what is wrong with it."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if any(c.isspace() for c in text):
        raise ValueError(
            f"{text!r} is more than one word: Ray reads the whole line as the address "
            "(put comments on their own line, starting with #)"
        )
    match = _ADDRESS.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an address; use {FORMATS}")
    scheme = (match["scheme"] or "").lower()
    if scheme and scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {scheme + '://'!r} in {text!r}; use {FORMATS}")
    if match["path"] and scheme not in ("http", "https"):
        raise ValueError(f"{text!r} has a path; only http(s) dashboard URLs may have one")
    port_text = match["port"]
    if port_text is None:
        if not scheme:
            raise ValueError(
                f"{text!r} has no port; write {text}:{GCS_PORT} for a GCS "
                f"or http://{text}:{DASHBOARD_PORT} for a dashboard"
            )
        port = _DEFAULT_PORTS[scheme]
    else:
        port = int(port_text) if port_text else 0
        if not 0 < port < 65536:
            raise ValueError(f"port {port_text!r} in {text!r} is not a port number (1-65535)")
    if not scheme:
        scheme = "http" if port == DASHBOARD_PORT else "gcs"
    return RayAddress(scheme, match["host"], port, (match["path"] or "").rstrip("/"))


def parse_init_address(text: str) -> str:
    """An address ``ray.init`` connects to (``--address``, ``RAY_ADDRESS``):
    ``auto``, ``local``, a GCS ``host:port`` or ``ray://host:port``.
    ``ValueError`` says what is wrong with it."""
    text = text.strip()
    if text in ("auto", "local"):
        return text
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an address; use host:port (the GCS, usually {GCS_PORT}), "
                         "ray://host:port, auto or local")
    if parse_address(text).scheme in ("http", "https"):
        raise ValueError(f"{text!r} is a dashboard address; Ray connects to the GCS (host:{GCS_PORT}) "
                         f"or a Ray Client address (ray://host:{CLIENT_PORT})")
    return text


@dataclass(frozen=True)
class AddressEntry:
    """One cluster in the address file.

    ``line`` is the 1-based line of the address; ``name_line`` the line of the
    ``# Cluster:`` comment that names it, or None when the name is derived.
    ``token`` is what its ``# Token:`` line (at ``token_line``) ties to it:
    ``auth.ENV_TIE``, a token file's path, or None.
    """

    name: str
    address: str
    line: int
    name_line: int | None
    parsed: RayAddress
    token: str | None = None
    token_line: int | None = None

    @property
    def dashboard_url(self) -> str:
        return self.parsed.dashboard_url()


def parse_entries(text: str, source: str = "<text>") -> list[AddressEntry]:
    """Parse the whole file; a malformed line raises ``AddressFileError``
    naming ``source`` and the line number."""
    entries: list[AddressEntry] = []
    seen: dict[str, int] = {}
    pending: tuple[str, int] | None = None
    token: tuple[str, int] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            named = _CLUSTER_LINE.match(line)
            tied = _TOKEN_LINE.match(line)
            if tied:
                token = (_token_value(tied.group(1).strip(), pending, f"{source}:{number}"), number)
            elif named:
                name = named.group(1).strip()
                if not name:
                    raise AddressFileError(
                        f"{source}:{number}: '# Cluster:' line without a name",
                        "write '# Cluster: NAME' above the cluster's address",
                    )
                # A '# Cluster:' line names the next address; one followed by
                # another (a commented-out entry) names nothing.
                pending, token = (name, number), None
            continue
        try:
            parsed = parse_address(line)
        except ValueError as err:
            raise AddressFileError(f"{source}:{number}: {err}") from None
        name, name_line = pending if pending else (line, None)
        tie, token_line = token if token else (None, None)
        pending = token = None
        if name in seen:
            raise AddressFileError(
                f"{source}:{number}: cluster name {name!r} is already used on line {seen[name]}",
                "give each entry its own '# Cluster: NAME' line",
            )
        seen[name] = number
        entries.append(AddressEntry(name, line, number, name_line, parsed, tie, token_line))
    return entries


def _token_value(value: str, pending: tuple[str, int] | None, where: str) -> str:
    """What a ``# Token:`` line ties to the entry it follows: ``env`` or an
    absolute path (a relative one would depend on where rlkit runs)."""
    if pending is None:
        raise AddressFileError(f"{where}: '# Token:' line outside an entry",
                               "put it right after the entry's '# Cluster: NAME' line")
    if value.lower() == ENV_TIE:
        return ENV_TIE
    if not value or not Path(value).expanduser().is_absolute():
        raise AddressFileError(f"{where}: '# Token: {value}' is neither 'env' nor an absolute token file path",
                               "write '# Token: env' (the token Ray's CLI would use) or '# Token: /path/to/token'")
    return value


def read_entries(path: Path | None = None) -> list[AddressEntry]:
    """The entries of the address file (none when it does not exist)."""
    path = path or paths.address_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise AddressFileError(f"{path}: not a text file", "it should list Ray addresses") from None
    except OSError as err:
        raise AddressFileError(f"{path}: cannot be read ({err.strerror})") from None
    return parse_entries(text, str(path))


def format_entry(name: str, address: str) -> str:
    """The lines rlkit writes for one cluster."""
    return f"# Cluster: {name}\n{address}\n"


def set_entry(name: str, address: str, replaces: str | None = None, path: Path | None = None) -> None:
    """Register ``name`` at ``address``: append it, or, when an entry ``name``
    exists with the address ``replaces``, change that line in place (so the
    first cluster stays first for ``awk | head -n 1``).

    An entry ``name`` with any other address is the user's and is not touched:
    that raises ``AddressFileError``.
    """
    parse_address(address)

    def edit(lines: list[str], entries: list[AddressEntry], source: str) -> list[str]:
        existing = next((e for e in entries if e.name == name), None)
        if existing is None:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            return lines + [format_entry(name, address)]
        if existing.address == address:
            return lines
        if replaces is None or existing.address != replaces:
            raise AddressFileError(
                f"{source}:{existing.line}: cluster {name!r} is already registered at {existing.address}",
                "choose another name, or remove that entry",
            )
        lines[existing.line - 1] = address + "\n"
        return lines

    _edit(path or paths.address_file(), edit)


def remove_entry(name: str, address: str, path: Path | None = None) -> bool:
    """Remove the entry ``name`` if its address is still ``address``.

    Only its two lines go; every other line stays byte for byte. Returns
    whether an entry was removed.
    """
    removed = False

    def edit(lines: list[str], entries: list[AddressEntry], source: str) -> list[str]:
        nonlocal removed
        entry = next((e for e in entries if e.name == name and e.address == address), None)
        if entry is None:
            return lines
        removed = True
        drop = {entry.line, entry.name_line, entry.token_line}
        return [text for number, text in enumerate(lines, start=1) if number not in drop]

    _edit(path or paths.address_file(), edit)
    return removed


def _edit(path: Path, edit: Callable[[list[str], list[AddressEntry], str], list[str]]) -> None:
    """Read, edit and atomically replace the file while holding its lock."""
    real = Path(os.path.realpath(path))
    real.parent.mkdir(parents=True, exist_ok=True)
    # The lock sits beside the file, so every rlkit (whatever its RLKIT_HOME)
    # that edits this file takes the same lock.
    lock = FileLock(str(real.parent / f"{real.name}.lock"))
    try:
        with lock.acquire(timeout=LOCK_TIMEOUT_S):
            try:
                text = real.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            lines = text.splitlines(keepends=True)
            new_lines = edit(list(lines), parse_entries(text, str(path)), str(path))
            if new_lines != lines:
                atomic_write(real, "".join(new_lines))
    except Timeout:
        raise WorkFailedError(
            f"{path}: could not take its lock within {LOCK_TIMEOUT_S:.0f} s",
            f"another program holds {lock.lock_file}",
        ) from None
