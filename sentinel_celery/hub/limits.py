"""GitHub's documented size limits on what clients send, and its 422s for going over them.

Owns the numbers (issue and comment bodies: 65,536 characters; issue titles:
256; commit status descriptions: 140) and :func:`check_length`, which the
endpoints call on each such field. Characters are counted as GitHub counts
them, in Unicode code points (Python's ``len``).
"""

from __future__ import annotations

from .errors import invalid

MAX_BODY = 65_536
MAX_TITLE = 256
MAX_STATUS_DESCRIPTION = 140


def check_length(resource: str, field: str, value: str | None, maximum: int) -> None:
    """422 "Validation Failed" with GitHub's ``custom`` error when ``value`` is over ``maximum`` characters."""
    if value is not None and len(value) > maximum:
        raise invalid(
            resource, field, code="custom", message=f"{field} is too long (maximum is {maximum} characters)"
        )
