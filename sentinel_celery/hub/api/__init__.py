"""The REST endpoints, one module per family of GitHub's API.

Each module owns a :class:`~sentinel_celery.hub.routing.Router` named
``router``; :func:`build_router` puts them together in matching order.
"""

from __future__ import annotations

from ..routing import Router
from . import (
    apps,
    checks,
    comments,
    commits,
    contents,
    gitdata,
    issue_events,
    issues,
    labels,
    meta,
    repos,
)


def build_router() -> Router:
    router = Router()
    # checks before commits: commits ends with a catch-all GET /commits/{ref:path}
    for module in (meta, apps, repos, issue_events, issues, comments, labels, contents, gitdata, checks, commits):
        router.include(module.router)
    return router
