"""Pytest fixtures that start a local GitHub-compatible API (sentinel hub).

Registered as a ``pytest11`` entry point, so every test session has:

``github_hub``
    A fresh in-memory :class:`~sentinel_celery.hub.Hub` per test, started on a
    free loopback port, with repository ``acme/app`` and an admin token.
    Attributes: ``base_url``, ``api_v3_url``, ``token``, ``owner``, ``repo``
    (full name); helpers ``client()`` (a PyGithub ``Github``),
    ``requests(...)`` / ``clear_requests()`` (the request log),
    ``set_faults(...)`` / ``clear_faults()``, ``add_token(...)``,
    ``add_collaborator(...)``, ``reset_rate_limits()``. Configure it per test
    with ``@pytest.mark.github_hub(repos=[...], limits={...}, faults={...})``
    (any :class:`Hub` keyword).

``github_hub_session``
    One hub for the whole session; faults and the request log are cleared
    before each test that uses it, state is kept.

``github_hub_factory``
    ``github_hub_factory(**hub_kwargs)`` starts more hubs; all stop at teardown.

``github_app_key``
    An RSA key pair for a GitHub App (:class:`~sentinel_celery.hub.AppKey`:
    ``private_pem`` for PyGithub's ``Auth.AppAuth``, ``public_pem`` for the
    hub), made once per session; :func:`~sentinel_celery.hub.generate_app_key`
    makes more. Register the app with ``github_hub.add_app(42, key.public_pem,
    {7: ["acme/app"]})``, or ``apps=[...]`` in the marker or the factory.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .app import Hub
from .apps import AppKey, generate_app_key


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "github_hub(**kwargs): keyword arguments for the github_hub fixture's Hub")


@pytest.fixture
def github_hub_factory() -> Iterator[Callable[..., Hub]]:
    hubs: list[Hub] = []

    def start(**kwargs: Any) -> Hub:
        hub = Hub(**kwargs).start()
        hubs.append(hub)
        return hub

    yield start
    for hub in reversed(hubs):
        hub.stop()


@pytest.fixture
def github_hub(request: pytest.FixtureRequest, github_hub_factory: Callable[..., Hub]) -> Hub:
    marker = request.node.get_closest_marker("github_hub")
    kwargs = dict(marker.kwargs) if marker else {}
    return github_hub_factory(**kwargs)


@pytest.fixture(scope="session")
def _github_hub_session_instance() -> Iterator[Hub]:
    hub = Hub().start()
    yield hub
    hub.stop()


@pytest.fixture
def github_hub_session(_github_hub_session_instance: Hub) -> Hub:
    hub = _github_hub_session_instance
    hub.clear_faults()
    hub.clear_requests()
    hub.reset_rate_limits()
    return hub


@pytest.fixture(scope="session")
def github_app_key() -> AppKey:
    return generate_app_key()
