"""What every command shares: tables, JSON output, one-line errors, the app a command talks to workers with."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from celery.utils.imports import symbol_by_name

from sentinel_celery.config import ConfigError, get_config
from sentinel_celery.plugin import create_app


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


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


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
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
            fail("configuration error:\n  " + "\n  ".join(exc.errors))
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


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
