"""Ray's JobSubmissionClient, held to rlkit's token rule: the headers are
the ones rlkit gives, and no request follows a redirect.

Ray's client adds the environment's token (``RAY_AUTH_MODE=token``) to
every client that has none, and ``requests`` keeps the ``Authorization``
header on a redirect from http to https of the same host. rlkit decides
which token goes where (``rlkit.clusters.auth``), and a dashboard does not
redirect its API: a redirect is refused. (The log stream, over aiohttp,
drops the header on a redirect to another origin by itself.)
"""

from __future__ import annotations

from typing import Any

import requests
from ray.job_submission import JobSubmissionClient

from rlkit.clusters.dashboard import redirect_error
from rlkit.errors import WorkFailedError


class ScopedJobClient(JobSubmissionClient):
    """A client whose requests carry ``headers`` only and follow no redirect."""

    def __init__(self, address: str, headers: dict[str, str]) -> None:
        self._given_headers = dict(headers)
        # Ray's __init__ already sends requests (a version check).
        super().__init__(address, headers=dict(headers))

    # Ray sets and extends this with the environment's token, then sends it
    # with every request: the headers rlkit gave win, a fresh copy each time.
    @property
    def _headers(self) -> dict[str, str]:
        return dict(self._given_headers)

    @_headers.setter
    def _headers(self, value: dict[str, str]) -> None:
        pass

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        response = super()._do_request(method, endpoint, allow_redirects=False, **kwargs)
        if response.is_redirect:
            raise WorkFailedError(str(redirect_error(self._address, endpoint, response.headers.get("Location"))))
        return response
