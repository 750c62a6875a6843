"""What every command shares: tables, JSON output, one-line errors, the app a command talks to workers with."""
from __future__ import annotations

import functools
import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import click
import redis
from celery.utils.imports import symbol_by_name

from sentinel_celery.config import ConfigError, get_config, redact_url
from sentinel_celery.plugin import create_app
from sentinel_celery.redis_url import RedisURLError, parse_sentinel_url
from sentinel_celery.state.redis_sentinel import MasterNotFoundError, master_not_found


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table; ``columns`` is (key, header)."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


#: keys whose values are points in time (epoch seconds or milliseconds, as numbers or numeric strings,
#: depending on where they are stored); ``--json`` prints every one of them as ISO 8601 UTC
TIMESTAMP_KEYS = frozenset({"acquired", "expires", "last_acquired", "last_beat", "registered", "started",
                            "declared_offline", "declared_at", "detected_at", "recovered_at", "since",
                            "last_seen", "ts", "at", "time", "last_flush"})
#: keys holding the user's own data (shared memory values), printed as they are
OPAQUE_KEYS = frozenset({"value"})
_MS_THRESHOLD = 10 ** 11  # epoch seconds stay below this until the year 5138; epoch milliseconds are above


def iso_time(value: Any) -> Any:
    """Epoch seconds or milliseconds (number or numeric string) as ``2026-12-01T14:31:21.123Z``."""
    if isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if number <= 0:
        return None
    seconds = number / 1000 if number >= _MS_THRESHOLD else number
    when = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def json_ready(data: Any) -> Any:
    """``data`` with every timestamp (see TIMESTAMP_KEYS) in one format: ISO 8601 UTC, milliseconds."""
    if isinstance(data, dict):
        return {k: v if k in OPAQUE_KEYS else
                iso_time(v) if k in TIMESTAMP_KEYS and isinstance(v, (int, float, str)) else json_ready(v)
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(v) for v in data]
    return data


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(json_ready(data), indent=2, sort_keys=True, default=str))
    else:
        click.echo(render(data))


def fail(message: str, code: int = 2) -> None:
    click.echo(f"sentinel: {message}", err=True)
    sys.exit(code)


def handles_errors(fn):
    """Turn configuration and Redis failures into one clear line and a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(exc.describe())
        except RedisURLError as exc:
            fail(f"redis.url: {exc}")
        except MasterNotFoundError:
            parsed = parse_sentinel_url(get_config().redis_url)
            fail(f"cannot reach the Redis {parsed.where()}: {master_not_found(parsed)}")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            url = redact_url(get_config().redis_url)
            fail(f"cannot reach Redis at {url}: {exc}")
    return wrapper


def celery_app(path: str | None = None):
    """The Celery app a command talks to workers with: ``path`` (module:attribute), else one built
    from the configuration as it is now (not the cached ready app, which keeps the configuration of
    its first use)."""
    if path:
        return symbol_by_name(path)
    return create_app("sentinel_celery")


#: a TCP port; 0 lets the system pick a free one
PORT = click.IntRange(0, 65535)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
