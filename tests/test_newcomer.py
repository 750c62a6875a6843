"""What a newcomer trips over: per-call task types, the worker file, one refusal line, one JSON time
format, stats and results that do not outlive their namespace, the built-in jobs' app."""
import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.broker.redis_queues import BrokerQueues
from sentinel_celery.cli import main
from sentinel_celery.cluster import autoscale, coordination, monitor
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.cluster.snapshot import CLUSTER_LEASE_PREFIX, split_leases
from sentinel_celery.config import get_config
from sentinel_celery.github import mirror
from sentinel_celery.routing import UnknownTaskType
from sentinel_celery.state.failovers import FailoverRecords
from sentinel_celery.state.leases import LockContended, get_backend, lease, try_acquire
from tests.jobs import record

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_apply_async_takes_task_type_per_call(celery_client):
    queues = BrokerQueues.for_config(get_config())
    record.apply_async(("typed",), task_type="test")       # the task's own type is build
    assert queues.depth("test") == 1 and queues.depth("build") == 0
    record.apply_async(("typed",), job_type="deploy")
    assert queues.depth("deploy") == 1
    with pytest.raises(UnknownTaskType, match="'lint', which is not configured"):
        record.apply_async(("typed",), task_type="lint")
    with pytest.raises(TypeError, match="disagree"):
        record.apply_async(("typed",), task_type="test", job_type="deploy")


def test_missing_worker_file_is_one_line_and_duplicate_refusal_is_logged_once(workers, config_dir):
    first = workers.start("nofile", queues=["build"], concurrency=1)
    looked_for = str(config_dir / "worker-nofile.json")
    lines = [line for line in first.log().splitlines() if looked_for in line]
    assert len(lines) == 1 and "WORKER_ID=nofile" in lines[0] and "does not exist" in lines[0], first.log()[-3000:]

    size_before = len(first.log())
    second = workers.start("nofile", queues=["build"], concurrency=1, wait=False)
    wait_for(lambda: not second.alive(), 45, message="the duplicate to exit")
    assert second.proc.returncode != 0
    own = second.log()[size_before:]  # both write to nofile.log: what the second one added
    assert own.count("already in use by a live worker") == 1, own[-3000:]
    assert "Traceback" not in own


def raw_epochs(data, path=""):
    """(path, value) of every number (or numeric string) that looks like epoch seconds or milliseconds."""
    if isinstance(data, dict):
        return [hit for k, v in data.items() for hit in raw_epochs(v, f"{path}.{k}")]
    if isinstance(data, list):
        return [hit for i, v in enumerate(data) for hit in raw_epochs(v, f"{path}[{i}]")]
    try:
        x = float(data)
    except (TypeError, ValueError):
        return []
    return [(path, data)] if 1.5e9 < x < 4e9 or 1.5e12 < x < 4e12 else []


def test_json_times_are_one_format_and_counters_read_zero(workers, rclient, namespace):
    workers.start("jt", queues=["build"], concurrency=1)
    held = try_acquire("deploy:json", 60, worker="jt")
    now_ms = int(time.time() * 1000)
    FailoverRecords(rclient, namespace).record({  # as cluster/failover.py writes one
        "id": "gone#1", "worker": "gone", "incarnation": 1, "last_beat": now_ms - 7000, "detected_at": now_ms - 100,
        "recovered_at": now_ms, "silent_ms": 6900, "tasks_recovered": [], "dead_lettered": [], "moved_home": 0,
        "leases_released": []})
    try:
        runner = CliRunner()
        for command in (["workers", "list"], ["worker", "status", "jt"], ["locks", "list"], ["locks", "stats"],
                        ["failover", "history"], ["cluster", "health"], ["cluster", "metrics"], ["logs"]):
            out = runner.invoke(main, [*command, "--json"])
            assert out.exit_code == 0, (command, out.output)
            assert raw_epochs(json.loads(out.output)) == [], command
        (event,) = json.loads(runner.invoke(main, ["failover", "history", "--json"]).output)
        assert all(ISO.match(event[k]) for k in ("last_beat", "detected_at", "recovered_at")), event
        (w,) = json.loads(runner.invoke(main, ["workers", "list", "--json"]).output)
        locks = json.loads(runner.invoke(main, ["locks", "list", "--json"]).output)
        lock = next(h for h in locks if h["name"] == "deploy:json")
        stats = json.loads(runner.invoke(main, ["locks", "stats", "--json"]).output)
        for field in ("last_beat", "registered", "started"):
            assert ISO.match(w[field]), (field, w[field])
        for field in ("acquired", "expires"):
            assert ISO.match(lock[field]), (field, lock[field])
        assert ISO.match(stats[0]["last_acquired"]) if "last_acquired" in stats[0] else True
        assert w["last_beat"][:10] == lock["acquired"][:10]  # same clock, same format
        assert w["failed"] == 0 and w["processed"] == 0
        table = runner.invoke(main, ["workers", "list"]).output.splitlines()
        header, row = table[0].split(), next(line for line in table if line.startswith("jt ")).split()
        assert row[header.index("FAILED")] == "0" and row[header.index("DONE")] == "0", table
    finally:
        held.release()


def test_lease_stats_keys_always_expire(sentinel_env, rclient, namespace):
    backend = get_backend()
    backend.record("never-acquired", "waits")           # a counter that creates its stats key
    held = try_acquire("stats:one", 60, worker="w")
    with pytest.raises(LockContended):
        with lease("stats:one", ttl=60, wait=0.2):
            pass
    held.release()
    keys = list(rclient.scan_iter(match=f"{namespace}lease:stats:*"))
    assert f"{namespace}lease:stats:never-acquired" in keys and f"{namespace}lease:stats:stats:one" in keys
    assert all(rclient.pttl(k) > 0 for k in keys), {k: rclient.pttl(k) for k in keys}
    assert {r["name"]: r["waits"] for r in backend.stats()}.get("stats:one", 0) >= 1


def test_results_live_under_the_namespace(workers, celery_client, rclient, namespace):
    workers.start("rs", queues=["build"], concurrency=1)
    result = record.delay("kept")
    assert result.get(timeout=30)["tag"] == "kept"
    assert rclient.exists(f"{namespace}celery-task-meta-{result.id}")
    assert not rclient.exists(f"celery-task-meta-{result.id}")


def test_builtin_jobs_bind_to_sentinels_app_in_a_script_that_made_none(sentinel_env, tmp_path, namespace):
    script = tmp_path / "send_build.py"
    script.write_text(textwrap.dedent("""
        from workers import build

        app = build.run.app            # the app the job is bound to: Sentinel's, not Celery's default
        print(json.dumps({"installed": bool(getattr(app, "sentinel_installed", False)),
                          "broker": app.conf.broker_url}))
        if getattr(app, "sentinel_installed", False):   # never send to whatever broker the default app has
            print(json.dumps({"id": build.run.delay(argv=["true"]).id}))
    """).replace("from workers", "import json\nfrom workers", 1))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, **sentinel_env, "PYTHONPATH": root}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines[0] == {"installed": True, "broker": sentinel_env["REDIS_URL"]}, proc.stdout
    assert BrokerQueues.for_config(get_config()).depth("build") == 1


def test_leader_leases_are_told_apart_from_job_leases():
    leaders = [monitor.LEASE_NAME, coordination.LEADER_LEASE, autoscale.AutoscaleDuty.LEASE, mirror.LEASE_NAME]
    assert all(name.startswith(CLUSTER_LEASE_PREFIX) for name in leaders)
    held = [{"name": n} for n in [*leaders, "deploy:production", "package:shop"]]
    jobs, cluster = split_leases(held)
    assert [h["name"] for h in jobs] == ["deploy:production", "package:shop"]
    assert [h["name"] for h in cluster] == leaders
