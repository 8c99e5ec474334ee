"""A token goes to its own cluster only: no redirect carries it to another
port, and a token from the environment reaches only the entries of
~/.ray_address that the user tied it to (``# Token: env``).

The dashboards here are loopback HTTP servers that answer as a Ray
dashboard does and record every request's headers: only a stand-in can
tell which headers arrived (a real dashboard keeps no such log)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlkit import paths
from rlkit.errors import WorkFailedError
from tests.cli_helpers import run_rlkit

SECRET = "env-token-0123456789abcdef"
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Dashboard:
    """A loopback server; ``requests`` holds (method, path, headers) of each."""

    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def authorizations(self) -> list[str]:
        return [h[k] for _, _, h in self.requests for k in h if k.lower() in ("authorization", "x-ray-authorization")]


def ray_like(method: str, path: str) -> Reply:
    """What a Ray dashboard answers to the calls rlkit and Ray's job client make."""
    if path == "/api/version":
        body = {"ray_version": "2.60.0", "version": "5", "ray_commit": "x", "session_name": "s"}
    elif method == "GET" and path.startswith("/api/packages/"):
        return 404, {}, b"not found"
    elif method == "POST" and path == "/api/jobs/":
        body = {"job_id": "raysubmit_1", "submission_id": "raysubmit_1"}
    else:
        body = {}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str, str], Reply]], Dashboard]]:
    """Start recording servers on loopback; all are shut down at the end."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str, str], Reply]) -> Dashboard:
        dashboard = Dashboard("")

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                dashboard.requests.append((self.command, self.path, dict(self.headers.items())))
                code, headers, body = answer(self.command, self.path)
                self.send_response(code)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _reply

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        dashboard.url = f"http://127.0.0.1:{server.server_address[1]}"
        return dashboard

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def redirect_to(target: Dashboard) -> Callable[[str, str], Reply]:
    return lambda method, path: (307, {"Location": target.url + path}, b"")


def write_entries(text: str) -> None:
    paths.address_file().write_text(text)


def test_a_redirect_to_another_port_carries_no_token(serve, tmp_path: Path) -> None:
    elsewhere = serve(ray_like)
    redirecting = serve(redirect_to(elsewhere))
    token = tmp_path / "lab.token"
    token.write_text(SECRET)
    write_entries(f"# Cluster: lab\n# Token: {token}\n{redirecting.url}\n")
    status = run_rlkit("status", "lab")
    assert status.returncode == 2
    assert f"redirects /api/version to {elsewhere.url}/api/version: rlkit follows no redirect" in status.stdout
    (tmp_path / "w").mkdir()
    submitted = run_rlkit("submit", "-w", str(tmp_path / "w"), "--", "python", "x.py")
    assert submitted.returncode == 2 and "rlkit follows no redirect" in submitted.stderr
    assert redirecting.authorizations() == [f"Bearer {SECRET}"] * 2
    assert elsewhere.requests == []


def test_rays_job_client_follows_no_redirect_and_sends_only_the_given_headers(
        serve, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlkit.jobs.ray_client import ScopedJobClient

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", SECRET)
    plain = serve(ray_like)
    ScopedJobClient(plain.url, {})  # Ray's own client would add the environment's token
    assert plain.requests and plain.authorizations() == []
    elsewhere = serve(ray_like)
    redirecting = serve(redirect_to(elsewhere))
    with pytest.raises(WorkFailedError, match="follows no redirect"):
        ScopedJobClient(redirecting.url, {"Authorization": "Bearer theirs"})
    assert elsewhere.requests == []


def test_an_environment_token_goes_only_to_the_entry_tied_to_it(serve, tmp_path: Path) -> None:
    tied, untied = serve(ray_like), serve(ray_like)
    write_entries(f"# Cluster: tied\n# Token: env\n{tied.url}\n# Cluster: untied\n{untied.url}\n")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": SECRET}
    status = run_rlkit("status", "--json", extra_env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert {c["name"]: c["state"] for c in json.loads(status.stdout)["clusters"]} == {"tied": "UP", "untied": "UP"}
    (tmp_path / "w").mkdir()
    submitted = run_rlkit("submit", "--all", "-w", str(tmp_path / "w"), "--", "python", "x.py", extra_env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert [p for m, p, _ in untied.requests if m == "POST"] == ["/api/jobs/"]
    assert untied.authorizations() == []
    assert set(tied.authorizations()) == {f"Bearer {SECRET}"}
    # Every request but the one that asks whether the cluster wants a token.
    assert len(tied.authorizations()) == len([p for _, p, _ in tied.requests if p != "/api/authentication_mode"])
