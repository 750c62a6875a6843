"""sentinel hub: a local GitHub-compatible REST API for tests and demos.

GitHub cannot be reached from every machine that runs Sentinel, yet each of
Sentinel's GitHub features has to be exercised for real: by PyGithub, over
HTTP, against a server that answers like api.github.com for the endpoints
Sentinel uses. This package is that server.

Modules, one concern each:

* :mod:`.app` — :class:`Hub`, the composition root and Python API
* :mod:`.server` — HTTP framing, threads, loopback binding
* :mod:`.pipeline` — the order a request goes through (faults, auth, limits, routing, ETag)
* :mod:`.routing` — path patterns and :class:`~.routing.Response`
* :mod:`.context` — what a handler sees; repository access rules; pagination
* :mod:`.auth` — tokens, kinds and access levels; the tokens file
* :mod:`.apps` — GitHub Apps: keys, installations, JWT verification
* :mod:`.ratelimit` — primary and secondary rate limits
* :mod:`.faults` — fault injection
* :mod:`.requestlog` — the request log
* :mod:`.store` — SQLite state; users and repositories
* :mod:`.git` — git objects, trees, refs and ancestry inside the store
* :mod:`.shapes` — GitHub's JSON shapes
* :mod:`.errors` — GitHub's error bodies
* :mod:`.api` — the REST endpoints, one module per family
* :mod:`.admin` — the ``/_hub`` admin API
* :mod:`.html` — the HTML view of issues
* :mod:`.cli` — the ``sentinel hub`` command
* :mod:`.pytest_plugin` — the ``github_hub`` fixtures
"""

from .app import Hub
from .apps import AppKey, AppSpec, generate_app_key
from .auth import TokenSpec, generate_token
from .faults import Faults
from .ratelimit import Limits
from .requestlog import LoggedRequest

__all__ = [
    "Hub",
    "TokenSpec",
    "AppSpec",
    "AppKey",
    "Limits",
    "Faults",
    "LoggedRequest",
    "generate_token",
    "generate_app_key",
]
