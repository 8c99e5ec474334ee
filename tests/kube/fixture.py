"""The ``kube`` fixture: one stand-in API server (and KubeRay operator) per
test session, reached by real kubectl through a kubeconfig of its own.

    def test_something(kube):
        kube.kubectl("apply", "--server-side", "-f", path)      # context rlkit-test, namespace default
        kube.objects("rayclusters")                             # what the server stores, for assertions

``kube.env`` is the environment to run kubectl (or rlkit) with: KUBECONFIG
and a discovery cache of the session's own. Import it from
tests/conftest.py, or from a test module, with
``from tests.kube.fixture import kube``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.operator import Operator
from tests.kube.server import ApiServer, ApiState, make_certificate
from tests.kube.store import KINDS_BY_PLURAL, NAMESPACES, ApiError

CONTEXT = "rlkit-test"
NAMESPACE = "default"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public")


@dataclass
class KubeStandin:
    """A running stand-in: its URL, kubeconfig and switches."""

    root: Path
    state: ApiState
    server: ApiServer
    operator: Operator
    context: str = CONTEXT
    namespace: str = NAMESPACE
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def token(self) -> str:
        """The bearer token the server accepts (the kubeconfig user's)."""
        return self.state.token

    @property
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG at this server and a fresh-enough discovery cache."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.root / "kube-cache")}

    def kubectl(self, *args: str, timeout: float = 60, version: str | None = None,
                input: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002  (subprocess's name)
        """Run real kubectl against the server; ``version`` (e.g. "1.28")
        picks that client instead of the dispatcher's match for the server."""
        binary = shutil.which("kubectl") or "kubectl"
        if version:
            binary = str(Path(os.path.realpath(binary)).parent / f"kubectl.{version}")
        return subprocess.run([binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, check=False)

    def add_namespace(self, name: str) -> None:
        if not self.state.store.namespace_exists(name):
            self.state.store.create(NAMESPACES, "", {"metadata": {"name": name}, "status": {"phase": "Active"}})

    def objects(self, plural: str, namespace: str | None = NAMESPACE, labels: str = "") -> list[dict[str, Any]]:
        """What the server stores (deep copies), for assertions."""
        return self.state.store.list(KINDS_BY_PLURAL[plural], namespace, labels)

    def get(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        try:
            return self.state.store.get(KINDS_BY_PLURAL[plural], namespace, name)
        except ApiError:
            return None

    @contextlib.contextmanager
    def crd_installed(self, installed: bool) -> Iterator[None]:
        """Serve with or without the RayCluster CRD (and operator) inside the block.
        kubectl's discovery cache is cleared on each switch, as it would be
        after a real install or uninstall has aged out of it."""
        before = self.state.crd_installed
        self._set_crd(installed)
        try:
            yield
        finally:
            self._set_crd(before)

    def _set_crd(self, installed: bool) -> None:
        self.state.crd_installed = installed
        shutil.rmtree(self.root / "kube-cache", ignore_errors=True)

    @contextlib.contextmanager
    def webhook(self, enabled: bool) -> Iterator[None]:
        """With or without KubeRay's validating webhook (which refuses a
        RayCluster whose name KubeRay cannot use; without it the object is
        stored and the operator only records a Warning event)."""
        before = self.state.webhook
        self.state.webhook = enabled
        try:
            yield
        finally:
            self.state.webhook = before

    def write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": self.context, "preferences": {},
            "clusters": [{"name": self.context, "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.server.cert.read_bytes()).decode()}}],
            "users": [{"name": f"{self.context}-user", "user": {"token": self.token}}],
            "contexts": [{"name": self.context, "context": {"cluster": self.context, "user": f"{self.context}-user",
                                                             "namespace": self.namespace}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def close(self) -> None:
        self.operator.stop()
        self.state.store.close()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)


def start_standin(root: Path) -> KubeStandin:
    """Start the server and operator threads; ``close()`` stops both and
    everything the operator started."""
    state = ApiState(token=secrets.token_hex(16))
    server = ApiServer(state, *make_certificate(root))
    operator = Operator(state.store, root / "pods", lambda: state.crd_installed)
    standin = KubeStandin(root=root, state=state, server=server, operator=operator)
    for name in BUILTIN_NAMESPACES:
        standin.add_namespace(name)
    standin.write_kubeconfig()
    thread = threading.Thread(target=server.serve_forever, name="kube-standin-api", daemon=True)
    thread.start()
    standin._threads.append(thread)
    try:
        operator.start()
    except BaseException:
        standin.close()
        raise
    return standin


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    standin = start_standin(tmp_path_factory.mktemp("kube"))
    try:
        yield standin
    finally:
        standin.close()
