"""sentinel hub: a local GitHub-compatible REST API for tests and demos.

GitHub cannot be reached from every machine that runs Sentinel, yet each of
Sentinel's GitHub features has to be exercised for real: by PyGithub, over
HTTP, against a server that answers like api.github.com for the endpoints
Sentinel uses. This package is that server.

Layers, bottom up. A module imports modules of lower layers only, plus the
ones of its own layer that its line names ("uses"); no import, not even one
inside a function, goes upwards, so the package has no import cycle
(``tests/hub/test_layers.py`` checks both).

1. **Foundations** — each stands alone (the ones that raise use ``errors``):

   * :mod:`.errors` — :class:`~.errors.HubError` and GitHub's error bodies
   * :mod:`.timestamps` — GitHub's ISO-8601 times
   * :mod:`.loopback` — which addresses are this machine's
   * :mod:`.db` — the SQLite connection and transactions
   * :mod:`.limits` — GitHub's size limits on titles, bodies and descriptions, and its 422 for them
   * :mod:`.apiversion` — the ``X-GitHub-Api-Version`` header: the versions served, 400 for others
   * :mod:`.ratelimit` — primary, secondary and unauthenticated rate limits
   * :mod:`.faults` — fault injection
   * :mod:`.markdown` — Markdown to inert HTML, as GitHub renders issue bodies
   * :mod:`.requestlog` — the request log
   * :mod:`.webhooks` — hooks, signed deliveries, retries, redelivery

2. **State** — what the hub knows, with no notion of HTTP:

   * :mod:`.git` — git objects and refs in the database
   * :mod:`.apps` — GitHub Apps: keys, installations, JWT verification
   * :mod:`.store` — the schema, users and repositories (uses ``git`` for a new repository's first commit)
   * :mod:`.auth` — tokens, kinds, access levels, the tokens file (uses ``apps``: which caller a JWT stands for)
   * :mod:`.state` — :class:`~.state.HubState`: all of the above for one hub, and the
     operations the Python API and the endpoints share (uses ``store``, ``auth``, ``apps``, ``webhooks``)

3. **Requests** — what a handler works with:

   * :mod:`.routing` — path patterns, :class:`~.routing.Response`, which credentials a route takes
   * :mod:`.context` — :class:`~.context.RequestContext`: the caller, input, repository
     access rules, pagination (uses ``routing``)
   * :mod:`.shapes` — GitHub's JSON shapes (uses ``context``)
   * :mod:`.events` — webhook payloads from the hub's state (uses ``shapes``)

4. **Endpoints** — independent of each other:

   * :mod:`.api` — the REST endpoints, one module per family (inside it, ``comments`` and
     ``labels`` use ``issues``, ``issues`` uses ``repos``, ``gitdata`` uses ``contents``,
     ``checks`` uses ``commits``); those that change issues, comments, labels or refs raise
     webhook events through ``events``
   * :mod:`.admin` — the ``/_hub`` admin API
   * :mod:`.html` — the HTML view at ``html_url``

5. **Serving**:

   * :mod:`.pipeline` — the order a request goes through (faults, version, auth, limits, routing, ETag)
   * :mod:`.server` — HTTP framing, threads, loopback binding (uses ``pipeline``)
   * :mod:`.app` — :class:`Hub`, the composition root and Python API (uses ``server``, ``pipeline``)
   * :mod:`.pytest_plugin` — the ``github_hub`` fixtures (uses ``app``); this package re-exports the
     public names. The ``sentinel hub`` command is ``sentinel_celery/cli/hub.py``.
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
