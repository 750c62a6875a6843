"""GitHub's timestamps: ISO 8601 in UTC with whole seconds and a ``Z``."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def iso(epoch: float | None = None) -> str:
    """GitHub's timestamp format: ``2024-05-01T12:00:00Z`` (UTC, whole seconds); now by default."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 time (``Z`` or an offset); raises ValueError."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
