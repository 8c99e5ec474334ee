"""Every provider rlkit has answers to the one interface, by the names that
``launching``, ``registry``, teardown and submit call."""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from rlkit.clusters.provider import PROVIDERS, Provider, get_provider
from rlkit.errors import WorkFailedError

PRESENT = [n for n in PROVIDERS if importlib.util.find_spec(f"rlkit.clusters.{n}") is not None]


@pytest.mark.parametrize("name", PRESENT)
def test_each_provider_implements_the_interface(name: str) -> None:
    provider = get_provider(name)
    assert isinstance(provider, Provider) and provider.name == name
    for method, _ in inspect.getmembers(Provider, inspect.isfunction):
        if method.startswith("_"):
            continue
        wanted = list(inspect.signature(getattr(Provider, method)).parameters)[1:]
        assert list(inspect.signature(getattr(provider, method)).parameters) == wanted, method


def test_an_unknown_provider_is_one_line() -> None:
    with pytest.raises(WorkFailedError, match="unknown provider 'aws'"):
        get_provider("aws")
