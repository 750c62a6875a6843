"""GitHub-shaped error responses.

Owns :class:`HubError` (raised anywhere in a request to stop it with a given
status) and the JSON body GitHub sends for errors: ``message``,
``documentation_url``, ``status`` and, for 422, the ``errors`` array.
"""

from __future__ import annotations

from typing import Any

DOCS_URL = "https://docs.github.com/rest"
RATE_LIMIT_DOCS_URL = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"


class HubError(Exception):
    """Stop the current request and answer with a GitHub-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        documentation_url: str = DOCS_URL,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = errors
        self.documentation_url = documentation_url
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body["documentation_url"] = self.documentation_url
        body["status"] = str(self.status)
        return body


def not_found() -> HubError:
    return HubError(404, "Not Found")


def invalid(
    resource: str, field: str, code: str = "invalid", value: Any = None, message: str | None = None
) -> HubError:
    """A 422 "Validation Failed" with one entry in ``errors``.

    ``code`` is one of GitHub's: missing, missing_field, invalid, already_exists, unprocessable, custom.
    """
    error: dict[str, Any] = {"resource": resource, "code": code, "field": field}
    if value is not None:
        error["value"] = value
    if message is not None:
        error["message"] = message
    return HubError(422, "Validation Failed", errors=[error])


def missing_field(resource: str, field: str) -> HubError:
    return invalid(resource, field, code="missing_field")


def unprocessable(message: str) -> HubError:
    """A 422 whose message says it all, as GitHub sends for git data errors."""
    return HubError(422, message)
