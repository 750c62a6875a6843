"""Small raw-HTTP helpers for hub tests (PyGithub hides headers and status codes)."""

from __future__ import annotations

from typing import Any

import requests

from sentinel_celery.hub import Hub


def call(
    hub: Hub, method: str, path: str, *, token: str | None = "", prefix: str = "", **kwargs: Any
) -> requests.Response:
    """``token=""`` means the hub's admin token, ``None`` means no Authorization header."""
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers.setdefault("Authorization", f"token {token or hub.token}")
    headers.setdefault("Accept", "application/vnd.github+json")
    return requests.request(method, f"{hub.base_url}{prefix}{path}", headers=headers, timeout=10, **kwargs)
