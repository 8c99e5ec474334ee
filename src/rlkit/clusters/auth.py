"""Ray token authentication (Ray >= 2.52): one token per cluster rlkit launches.

A Ray process takes its token from, in this order, ``RAY_AUTH_TOKEN``,
the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``; it
uses one only when ``RAY_AUTH_MODE=token``. HTTP clients send it as
``Authorization: Bearer <token>``. rlkit never prints a token: it passes the
file's path, and reads the file only to build request headers.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from rlkit import paths
from rlkit.files import atomic_write
from rlkit.errors import BadInputError

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# `# Token: env` in ~/.ray_address: the entry takes the environment's token.
ENV_TIE = "env"


def token_file(name: str) -> Path:
    """Where the token of rlkit's cluster ``name`` is kept."""
    return paths.tokens_dir() / f"{name}.token"


def create_token_file(name: str) -> Path:
    """Generate a fresh token for cluster ``name``; store it 0600 under
    ``$RLKIT_HOME/tokens`` and return the file's path."""
    paths.private_dir(paths.tokens_dir())
    path = token_file(name)
    # 256 bits, as Ray's own generator.
    atomic_write(path, secrets.token_hex(32), mode=0o600)
    return path


@dataclass(frozen=True)
class TokenSource:
    """Where a cluster's token comes from. ``path`` None with ``from_env``
    False means: no token, requests go without one."""

    path: Path | None = None
    from_env: bool = False

    def read(self) -> str | None:
        """The token, or None when there is none to send; a token file that
        is named but missing or empty raises ``BadInputError``."""
        if self.from_env:
            return os.environ[TOKEN_ENV].strip()
        if self.path is None:
            return None
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise BadInputError(
                f"token file {self.path} is missing",
                "relaunch the cluster, or restore the file",
            ) from None
        except OSError as err:
            raise BadInputError(f"token file {self.path} cannot be read ({err.strerror})") from None
        if not token:
            raise BadInputError(f"token file {self.path} is empty")
        return token

    def describe(self) -> str:
        if self.from_env:
            return f"${TOKEN_ENV}"
        return str(self.path) if self.path else "no token"


def token_source(token_path: str | None) -> TokenSource:
    """The token of a cluster rlkit launched: its own file, or none."""
    return TokenSource(Path(token_path)) if token_path else TokenSource()


def tied_token(tie: str | None) -> TokenSource:
    """The token the user tied to a hand-written entry (its ``# Token:``
    line): ``env`` is the one Ray's CLI takes from this environment
    (``RAY_AUTH_TOKEN``, then the file ``RAY_AUTH_TOKEN_PATH`` names, then
    ``~/.ray/auth_token``), anything else a token file. An entry with no tie
    gets no token: a token in the shell is for the clusters tied to it, not
    for every address in the file."""
    if tie is None:
        return TokenSource()
    if tie != ENV_TIE:
        return TokenSource(Path(tie).expanduser())
    if os.environ.get(TOKEN_ENV, "").strip():
        return TokenSource(from_env=True)
    if os.environ.get(TOKEN_PATH_ENV):
        return TokenSource(Path(os.environ[TOKEN_PATH_ENV]).expanduser())
    return TokenSource(Path.home() / ".ray" / "auth_token")


AUTHORIZATION = "Authorization"


def auth_headers(token: str | None, header: str | None = None) -> dict[str, str]:
    """HTTP headers that authenticate a request to a Ray dashboard; ``header``
    None is Authorization (Ray's dashboard reads X-Ray-Authorization too)."""
    return {header or AUTHORIZATION: f"Bearer {token}"} if token else {}


def ray_env(token_path: str | None) -> dict[str, str | None]:
    """Environment for Ray's own CLI and scripts to talk to a cluster:
    a value of None means the variable must be unset (``RAY_AUTH_TOKEN``
    would win over the token file)."""
    if token_path:
        return {MODE_ENV: "token", TOKEN_PATH_ENV: token_path, TOKEN_ENV: None}
    return {}
