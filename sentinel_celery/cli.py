"""The ``sentinel`` command line (also ``celery -A app sentinel ...``).

Every command prints a table for people or JSON with ``--json``, and exits non-zero with one clear
line when Redis or the configuration is not usable. Subsystems add their own command groups with
``main.add_command`` in :func:`_register_subcommands`.
"""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import click
import redis

from .config import ConfigError, get_config, load_config


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
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
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
        from celery.utils.imports import symbol_by_name
        return symbol_by_name(path)
    from .plugin import create_app
    return create_app("sentinel_celery")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(name="sentinel", help="Task Sentinel for Celery: workers, leases, failover and the GitHub mirror.")
@click.version_option(package_name="sentinel-celery")
def main() -> None:
    pass


# -- config -----------------------------------------------------------------------------------------
@main.group(help="Configuration.")
def config() -> None:
    pass


@config.command("check", help="Validate and print the merged configuration (token redacted).")
@click.option("--config-dir", type=click.Path(), default=None, help="Default: $SENTINEL_CONFIG_DIR or ./config")
@json_option
def config_check(config_dir, as_json):
    try:
        cfg = load_config(config_dir)
    except ConfigError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "errors": exc.errors}, indent=2))
            sys.exit(1)
        fail("configuration is invalid:\n  " + "\n  ".join(exc.errors), code=1)
    data = cfg.as_dict(redact=True)
    data["shared"]["redis"]["url"] = redact_url(data["shared"]["redis"]["url"])
    if as_json:
        click.echo(json.dumps({"ok": True, **data}, indent=2, sort_keys=True))
    else:
        click.echo("configuration OK (sources: " + " < ".join(data["sources"]) + ")")
        click.echo(json.dumps({"shared": data["shared"], "worker": data["worker"]}, indent=2))


# -- workers ----------------------------------------------------------------------------------------
@main.group(help="The worker registry.")
def workers() -> None:
    pass


def _registry():
    from .bootsteps import get_registry
    return get_registry()


@workers.command("list", help="Workers with their state (online/stale/offline), incarnation and load.")
@click.option("--all", "include_offline", is_flag=True, default=True, help="Include offline workers (default).")
@json_option
@handles_errors
def workers_list(include_offline, as_json):
    rows = []
    for w in _registry().workers(include_offline=include_offline):
        d = w.as_dict()
        rows.append({**d, "region": (d.get("metadata") or {}).get("region"),
                     "load": f"{w.active}/{w.max_tasks}", "beat_age": f"{w.age_ms / 1000:.1f}s"})
    emit(rows, as_json, lambda rs: table(rs, [
        ("id", "WORKER"), ("status", "STATUS"), ("incarnation", "INC"), ("hostname", "HOST"),
        ("region", "REGION"), ("queues", "QUEUES"), ("load", "LOAD"), ("processed", "DONE"),
        ("failed", "FAILED"), ("beat_age", "LAST BEAT")]) if rs else "no workers registered")


@workers.command("capacity", help="Capacity per worker and per task type.")
@json_option
@handles_errors
def workers_capacity(as_json):
    rows, by_type = [], {}
    for w in _registry().workers(include_offline=False):
        cap = w.capacity
        types = cap.get("supportedTaskTypes") or []
        rows.append({"id": w.id, "status": w.status, "slots": w.max_tasks, "active": w.active,
                     "free": max(w.max_tasks - w.active, 0), "cpuCores": cap.get("cpuCores"),
                     "memoryMb": cap.get("memoryMb"), "types": types})
        if w.status == "online":
            for t in types:
                agg = by_type.setdefault(t, {"type": t, "workers": 0, "slots": 0, "active": 0})
                agg["workers"] += 1
                agg["slots"] += w.max_tasks
                agg["active"] += w.active
    data = {"workers": rows, "by_type": sorted(by_type.values(), key=lambda r: r["type"])}

    def render(d):
        if not d["workers"]:
            return "no workers registered"
        return table(d["workers"], [("id", "WORKER"), ("status", "STATUS"), ("slots", "SLOTS"),
                                     ("active", "ACTIVE"), ("free", "FREE"), ("cpuCores", "CPU"),
                                     ("memoryMb", "MEM MB"), ("types", "TYPES")]) + "\n\n" + table(
            d["by_type"], [("type", "TYPE"), ("workers", "WORKERS"), ("slots", "SLOTS"), ("active", "ACTIVE")])
    emit(data, as_json, render)


@workers.command("drain", help="Stop a worker taking work, let it finish what it holds, then warm-stop it.")
@click.argument("worker_id")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for its tasks (default: "
              "distributed.autoscale.drainTimeoutSeconds).")
@click.option("--keep-running", is_flag=True, help="Stop consuming and finish, but do not shut it down.")
@json_option
@handles_errors
def workers_drain(worker_id, timeout, keep_running, as_json):
    from .drain import DrainError, drain
    try:
        result = drain(celery_app(), worker_id, timeout=timeout, shutdown=not keep_running,
                       progress=None if as_json else (lambda msg: click.echo(f"{worker_id}: {msg}")))
    except DrainError as exc:
        fail(str(exc), code=1)
    if as_json:
        emit(result.as_dict(), True, str)


# -- locks ------------------------------------------------------------------------------------------
@main.group(help="Fenced leases (locks).")
def locks() -> None:
    pass


def _leases():
    from .leases import get_backend
    return get_backend()


@locks.command("list", help="Leases held now: key, holder, fencing token, time left.")
@json_option
@handles_errors
def locks_list(as_json):
    rows = [{**h, "expires_in": f"{h['ttl_ms'] / 1000:.1f}s"} for h in _leases().held()]
    emit(rows, as_json, lambda rs: table(rs, [("name", "LEASE"), ("worker", "WORKER"), ("token", "TOKEN"),
                                              ("task_id", "TASK"), ("expires_in", "EXPIRES IN")])
         if rs else "no leases held")


STAT_METRICS = ("acquisitions", "conflicts", "waits", "releases", "lost", "fenced")


@locks.command("stats", help="Per-lease counters, sorted by --metric.")
@click.option("--metric", type=click.Choice(STAT_METRICS), default="acquisitions")
@click.option("--limit", type=int, default=50)
@json_option
@handles_errors
def locks_stats(metric, limit, as_json):
    rows = sorted(_leases().stats(), key=lambda r: r[metric], reverse=True)[:limit]
    emit(rows, as_json, lambda rs: table(rs, [("name", "LEASE"), *[(m, m.upper()) for m in STAT_METRICS],
                                              ("last_token", "LAST TOKEN"), ("holder_worker", "HELD BY")])
         if rs else "no leases used yet")


@locks.command("distribution", help="How leases are spread over workers: held now and acquired last.")
@json_option
@handles_errors
def locks_distribution(as_json):
    backend = _leases()
    dist: dict[str, dict] = {}
    for h in backend.held():
        dist.setdefault(h.get("worker") or "-", {"worker": h.get("worker") or "-", "held": 0, "last_acquired": 0})[
            "held"] += 1
    for s in backend.stats():
        w = s.get("last_worker") or "-"
        dist.setdefault(w, {"worker": w, "held": 0, "last_acquired": 0})["last_acquired"] += 1
    rows = sorted(dist.values(), key=lambda r: (-r["held"], r["worker"]))
    emit(rows, as_json, lambda rs: table(rs, [("worker", "WORKER"), ("held", "HELD NOW"),
                                              ("last_acquired", "LEASES LAST TAKEN")]) if rs else "no leases used yet")


def _register_subcommands() -> None:
    """Command groups owned by other modules; each is optional so one broken part cannot hide the rest."""
    from importlib import import_module
    for module, attr in (("sentinel_celery.hub.cli", "hub_command"),
                         ("sentinel_celery.github.cli", "github_group"),
                         ("sentinel_celery.github.cli", "mirror_command"),
                         ("sentinel_celery.demo", "demo_command"),
                         ("sentinel_celery.clustercli", "cluster"),
                         ("sentinel_celery.memorycli", "memory_group"),
                         ("sentinel_celery.autoscalecli", "autoscale_group"),
                         ("sentinel_celery.opscli", "worker"),
                         ("sentinel_celery.failovercli", "failover_group"),
                         ("sentinel_celery.failovercli", "monitor_command"),
                         ("sentinel_celery.opscli", "logs_command"),
                         ("sentinel_celery.opscli", "metrics_group"),
                         ("sentinel_celery.opscli", "alerts_group"),
                         ("sentinel_celery.flower", "flower_command")):
        try:
            command = getattr(import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        main.add_command(command)


if __name__ != "__main__":
    _register_subcommands()


@click.group(name="sentinel", cls=click.Group, commands=main.commands,
             help="Task Sentinel commands (same as the `sentinel` console script).")
def celery_command() -> None:
    pass


if __name__ == "__main__":
    # Run the imported module's ``main``, not this ``__main__`` copy: subcommand modules import
    # their helpers from ``sentinel_celery.cli``, and register on that module's group.
    from sentinel_celery.cli import main as _main
    _main()
