"""``sentinel memory get|set|list|delete``: the shared memory (state/memory.py) from the command line."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from sentinel_celery.cli.common import emit, fail, handles_errors, json_option, table
from sentinel_celery.state.memory import DEFAULT_NAMESPACE, StaleWrite, VersionRequired, shared_memory

namespace_option = click.option("-n", "--namespace", default=DEFAULT_NAMESPACE, show_default=True)


def _memory():
    return shared_memory()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@click.group("memory", help="Shared memory: namespaced JSON values with versions.")
def memory_group() -> None:
    pass


@memory_group.command("get", help="Print a value (JSON), or its entry with --json.")
@click.argument("key")
@namespace_option
@json_option
@handles_errors
def memory_get(key, namespace, as_json):
    entry = _memory().entry(key, namespace, cached=False)
    if entry is None:
        fail(f"no key '{key}' in namespace '{namespace}'", code=1)
    if as_json:
        emit(entry.as_dict(), True, str)
    else:
        click.echo(json.dumps(entry.value))


@memory_group.command("set", help="Store VALUE (parsed as JSON; anything else is stored as a string).")
@click.argument("key")
@click.argument("value")
@namespace_option
@click.option("--expected-version", type=int, default=None,
              help="Refuse unless the key is at this version (0: unless it does not exist).")
@click.option("--ttl", type=float, default=None, help="Expire after this many seconds.")
@json_option
@handles_errors
def memory_set(key, value, namespace, expected_version, ttl, as_json):
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    try:
        entry = _memory().set(key, parsed, namespace, expected_version=expected_version, ttl=ttl)
    except (StaleWrite, VersionRequired) as exc:
        fail(str(exc), code=1)
    emit(entry.as_dict(), as_json, lambda e: f"{namespace}/{key} = {json.dumps(e['value'])} (version {e['version']})")


@memory_group.command("list", help="Keys of a namespace with version, time and writer.")
@namespace_option
@click.option("--prefix", default="", help="Only keys starting with this.")
@json_option
@handles_errors
def memory_list(namespace, prefix, as_json):
    entries = [e.as_dict() for e in _memory().entries(namespace, prefix)]
    rows = [{**e, "value": json.dumps(e["value"])[:60], "when": _when(e["ts"])} for e in entries]
    emit(entries if as_json else rows, as_json, lambda rs: table(rs, [
        ("key", "KEY"), ("value", "VALUE"), ("version", "VERSION"), ("when", "WRITTEN (UTC)"), ("writer", "BY")])
        if rs else f"namespace '{namespace}' is empty")


@memory_group.command("delete", help="Remove a key.")
@click.argument("key")
@namespace_option
@click.option("--expected-version", type=int, default=None, help="Refuse unless the key is at this version.")
@handles_errors
def memory_delete(key, namespace, expected_version):
    try:
        existed = _memory().delete(key, namespace, expected_version=expected_version)
    except (StaleWrite, VersionRequired) as exc:
        fail(str(exc), code=1)
    if not existed:
        fail(f"no key '{key}' in namespace '{namespace}'", code=1)
    click.echo(f"deleted {namespace}/{key}")
