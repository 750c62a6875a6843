"""Functions run in separate processes (multiprocessing, spawn) by test_memory.py."""
import os


def _memory(redis_url, namespace, mode, interval_ms=5000):
    os.environ.update({"REDIS_URL": redis_url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_CONFIG_DIR": "/nonexistent"})
    from sentinel_celery.config import load_config, set_config
    from sentinel_celery.state.memory import shared_memory
    cfg = load_config(overrides={"distributed.memorySync.conflictResolution": mode,
                                 "distributed.memorySync.intervalMs": interval_ms})
    set_config(cfg)
    return shared_memory(cfg)


def blind_writer(redis_url, namespace, me, n, start):
    """last_write_wins: write n values without reading; return (version, value) of each write."""
    mem = _memory(redis_url, namespace, "last_write_wins")
    start.wait()
    return [(mem.set("shared", {"by": me, "n": i}, "lww").version, {"by": me, "n": i}) for i in range(n)]


def counter_incrementer(redis_url, namespace, me, n, start):
    """version_check: n increments by read + conditional write; return (successes, refusals)."""
    from sentinel_celery.state.memory import StaleWrite
    mem = _memory(redis_url, namespace, "version_check")
    start.wait()
    done = refused = 0
    while done < n:
        current = mem.entry("counter", "vc", cached=False)
        try:
            mem.set("counter", (current.value if current else 0) + 1, "vc",
                    expected_version=current.version if current else 0)
            done += 1
        except StaleWrite:
            refused += 1
    return done, refused


def remote_set(redis_url, namespace, key, value):
    mem = _memory(redis_url, namespace, "last_write_wins")
    return mem.set(key, value, "cache").version
