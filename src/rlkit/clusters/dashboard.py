"""Small HTTP client for a Ray dashboard: every request carries the token and
a timeout, follows no redirect, and every failure becomes one of three plain
explanations."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from rlkit import paths
from rlkit.clusters.auth import auth_headers

UNREACHABLE = "UNREACHABLE"
AUTH_FAILED = "AUTH-FAILED"
WRONG_PORT = "WRONG-PORT"

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


class DashboardError(Exception):
    """A request failed; ``state`` is UNREACHABLE, AUTH-FAILED or WRONG-PORT
    and the message is one line for the user."""

    def __init__(self, state: str, message: str) -> None:
        self.state = state
        super().__init__(message)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib sends a request's headers, the token among them, on to
    wherever a redirect points: another host, another port. A dashboard
    does not redirect its API, so a redirect is answered as the error it is."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    # A proxy from the environment must not see loopback traffic (nor its
    # token); remote dashboards follow the environment, as Ray's SDK does.
    if urlsplit(url).hostname in _LOOPBACK:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)
    return urllib.request.build_opener(_NoRedirects)


def get(base_url: str, path: str, token: str | None, timeout: float, header: str | None = None) -> bytes:
    """GET ``base_url + path``: the body, or ``DashboardError``; the token
    goes in ``header`` (None: Authorization)."""
    url = base_url.rstrip("/") + path
    where = urlsplit(base_url).netloc or base_url
    request = urllib.request.Request(url, headers={"Accept": "application/json", **auth_headers(token, header)})
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise _http_error(where, path, err.code, err.headers.get("Location")) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise _connection_error(where, reason, timeout) from None


def get_json(base_url: str, path: str, token: str | None, timeout: float, header: str | None = None) -> Any:
    """GET ``base_url + path`` and decode JSON, or raise ``DashboardError``."""
    body = get(base_url, path, token, timeout, header)
    try:
        return json.loads(body)
    except ValueError:
        where = urlsplit(base_url).netloc or base_url
        raise DashboardError(WRONG_PORT, f"{where} answered {path} with something other than JSON: {_NOT_DASHBOARD}") from None


_NOT_DASHBOARD = "not a Ray dashboard (the dashboard usually listens on 8265, the GCS on 6379)"


def redirect_error(where: str, path: str, location: str | None) -> DashboardError:
    """A redirect, refused: a cluster's token goes to its own address only."""
    return DashboardError(
        WRONG_PORT,
        f"{where} redirects {path} to {location or 'elsewhere'}: rlkit follows no redirect, so that a token "
        f"reaches its own cluster only; write the address it redirects to in {paths.address_file()}",
    )


def _http_error(where: str, path: str, code: int, location: str | None) -> DashboardError:
    if 300 <= code < 400:
        return redirect_error(where, path, location)
    if code == 401:
        return DashboardError(AUTH_FAILED, f"{where} requires a token and none was sent")
    if code == 403:
        return DashboardError(AUTH_FAILED, f"{where} rejected the token")
    if code == 404:
        return DashboardError(WRONG_PORT, f"{where} answers HTTP but has no {path}: {_NOT_DASHBOARD}")
    return DashboardError(UNREACHABLE, f"{where} answered HTTP {code} to {path}")


def _connection_error(where: str, reason: object, timeout: float) -> DashboardError:
    if isinstance(reason, ConnectionRefusedError):
        return DashboardError(UNREACHABLE, f"nothing listens at {where} (connection refused)")
    if isinstance(reason, TimeoutError):
        return DashboardError(UNREACHABLE, f"{where} did not answer within {timeout:.1f} s")
    if isinstance(reason, socket.gaierror):
        return DashboardError(UNREACHABLE, f"cannot resolve the host of {where}")
    if isinstance(reason, (http.client.HTTPException, ConnectionResetError, BrokenPipeError)):
        return DashboardError(WRONG_PORT, f"{where} does not speak HTTP: {_NOT_DASHBOARD}")
    text = getattr(reason, "strerror", None) or str(reason)
    return DashboardError(UNREACHABLE, f"{where} is unreachable ({text})")
