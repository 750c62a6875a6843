"""Shared memory: versions, conflict modes under concurrent writers (processes), cache invalidation."""
import json
import multiprocessing
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import load_config
from sentinel_celery.state.memory import SharedMemory, StaleWrite, VersionRequired, shared_memory
from tests import memory_procs


@pytest.fixture
def mem(sentinel_env):
    m = shared_memory(load_config())
    yield m



def test_values_versions_timestamps_and_listing(mem):
    a = mem.set("a", {"list": [], "n": 1.5})
    b = mem.set("b", "text", namespace="other")
    a2 = mem.set("a", [1, 2])
    assert (a.version, a2.version) == (1, 2) and b.version == 1  # one version counter per namespace
    assert a2.ts >= a.ts > 0
    assert mem.get("a") == [1, 2] and mem.get("missing", default="d") == "d"
    assert mem.entry("a").version == 2
    mem.set("a:x", True)
    assert mem.list() == {"a": [1, 2], "a:x": True}
    assert mem.list(prefix="a:") == {"a:x": True}
    assert set(mem.namespaces()) == {"default", "other"}
    assert mem.delete("a") is True and mem.delete("a") is False and mem.get("a") is None


def test_versions_only_grow_so_a_stale_write_is_refused_even_after_recreate(mem):
    first = mem.set("k", 1)
    mem.delete("k")
    again = mem.set("k", 2, expected_version=0)          # 0: only if absent
    assert again.version > first.version
    with pytest.raises(StaleWrite, match=r"'k' in namespace 'default' is at version 2, but the write expected "
                                         r"version 1; read it again"):
        mem.set("k", 3, expected_version=first.version)  # stale: from before the delete
    with pytest.raises(StaleWrite, match="expected to not exist"):
        mem.set("k", 3, expected_version=0)
    with pytest.raises(StaleWrite):
        mem.delete("k", expected_version=first.version)
    assert mem.get("k") == 2
    assert mem.set("k", 4, expected_version=again.version).value == 4


def test_ttl_expires_and_listing_forgets_it(mem):
    mem.set("short", 1, ttl=0.3)
    mem.set("long", 1)
    wait_for(lambda: mem.entry("short", cached=False) is None, 5, message="ttl expiry")
    assert mem.list() == {"long": 1}


def test_version_check_mode_requires_a_version(rclient, namespace):
    m = SharedMemory(rclient, namespace, mode="version_check")
    with pytest.raises(VersionRequired, match="pass expected_version"):
        m.set("x", 1)
    assert m.set("x", 1, expected_version=0).version == 1
    with pytest.raises(VersionRequired):
        m.delete("x")
    assert m.update("x", lambda v: v + 1).value == 2


def test_namespace_and_key_are_checked(mem):
    with pytest.raises(ValueError, match="namespace"):
        mem.set("k", 1, namespace="a:b")
    with pytest.raises(ValueError, match="key"):
        mem.set("", 1)


def _run_procs(fn, args_list):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Event()
    with ctx.Pool(len(args_list)) as pool:
        pending = [pool.apply_async(fn, (*args, start)) for args in args_list]
        time.sleep(0.5)
        start.set()
        return [p.get(timeout=90) for p in pending]


def test_last_write_wins_under_concurrent_writers(sentinel_env, redis_url, namespace):
    results = _run_procs(memory_procs.blind_writer, [(redis_url, namespace, f"p{i}", 40) for i in range(4)])
    versions = [v for writes in results for v, _ in writes]
    assert len(set(versions)) == len(versions) == 160          # every write got its own version
    for writes in results:
        own = [v for v, _ in writes]
        assert own == sorted(own)                               # and each writer's versions grow
    final = shared_memory(load_config()).entry("shared", "lww", cached=False)
    assert final.version == max(versions)                       # the last write is the one kept
    (last_value,) = [value for writes in results for v, value in writes if v == final.version]
    assert final.value == last_value


def test_version_check_loses_no_update_under_concurrent_writers(sentinel_env, redis_url, namespace):
    results = _run_procs(memory_procs.counter_incrementer, [(redis_url, namespace, f"p{i}", 25) for i in range(4)])
    assert [done for done, _ in results] == [25] * 4
    final = SharedMemory(__import__("redis").Redis.from_url(redis_url, decode_responses=True), namespace,
                         mode="version_check").entry("counter", "vc", cached=False)
    assert final.value == 100                                   # read-modify-write never lost an increment


def test_another_processs_write_invalidates_this_processs_cache(sentinel_env, redis_url, namespace, rclient):
    m = SharedMemory(rclient, namespace, refresh_ms=600_000, cache_size=10)  # only events can refresh it
    m.set("color", "red", "cache")
    assert m.get("color", "cache") == "red"
    # a change that bypasses the API (no event) is not seen: the read above is cached
    rclient.hset(f"{namespace}mem:cache:entry:color", "value", json.dumps("sneaky"))
    assert m.get("color", "cache") == "red"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        version = pool.apply(memory_procs.remote_set, (redis_url, namespace, "color", "blue"))
    wait_for(lambda: m.get("color", "cache") == "blue", 10, message="the other process's write")
    assert m.entry("color", "cache").version == version
    m.close()


def test_lru_keeps_cache_size_entries(rclient, namespace):
    m = SharedMemory(rclient, namespace, cache_size=2, refresh_ms=600_000)
    for k in "abc":
        m.set(k, k)
        m.get(k)
    assert [key for _, key in m._cache] == ["b", "c"]
    m.close()


def test_watch_delivers_changes(mem):
    w = mem.watch("job", namespace="w")
    everything = mem.watch(namespace="w")
    mem.set("other", 1, namespace="w")
    mem.set("job", 1, namespace="w")
    mem.delete("job", namespace="w")
    assert [(e["key"], e["op"]) for e in (w.get(5), w.get(5))] == [("job", "set"), ("job", "delete")]
    assert [everything.get(5)["key"] for _ in range(3)] == ["other", "job", "job"]
    w.stop(), everything.stop()


def test_cli_set_get_list_delete(sentinel_env):
    run = lambda *a: CliRunner().invoke(main, list(a))  # noqa: E731
    out = run("memory", "set", "url", '{"host": "cache", "port": 1}', "-n", "cfg")
    assert out.exit_code == 0 and "version 1" in out.output, out.output
    assert json.loads(run("memory", "get", "url", "-n", "cfg").output) == {"host": "cache", "port": 1}
    assert run("memory", "set", "plain", "just text", "-n", "cfg").exit_code == 0
    listed = json.loads(run("memory", "list", "-n", "cfg", "--json").output)
    assert [(e["key"], e["value"]) for e in listed] == [("plain", "just text"), ("url", {"host": "cache", "port": 1})]
    stale = run("memory", "set", "url", "1", "-n", "cfg", "--expected-version", "7")
    assert stale.exit_code == 1 and "is at version 1" in stale.output
    assert run("memory", "delete", "url", "-n", "cfg").exit_code == 0
    assert run("memory", "get", "url", "-n", "cfg").exit_code == 1
