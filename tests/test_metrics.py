"""Metrics: the HTTP endpoint, cluster metrics / health (HTTP and CLI) against a real worker and real Redis."""
import json
import urllib.error
import urllib.request

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config
from sentinel_celery.ops.metrics import serve_metrics
from sentinel_celery.state.leases import LockContended, try_acquire
from sentinel_celery.state.taskstats import BUCKETS, quantile


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())))


def test_metrics_health_and_cli_follow_a_real_worker_and_its_queues(workers, celery_client, sentinel_env):
    server = serve_metrics(get_config(), celery_client, host="127.0.0.1", port=0)
    runner = CliRunner()
    try:
        # No worker yet: critical, over HTTP (503) and the CLI (exit 1).
        status, body = get(f"{server.url}/cluster/health")
        assert status == 503 and json.loads(body)["status"] == "critical"
        out = runner.invoke(main, ["cluster", "health"])
        assert out.exit_code == 1 and "CRITICAL" in out.output and "no live workers" in out.output

        workers.start("mw", queues=["build"], concurrency=1, include=("tests.jobs", "tests.opsjobs"))
        # Nobody consumes "deploy": its messages wait, stamped with their publish time.
        for _ in range(3):
            celery_client.send_task("workers.deploy.run", kwargs={"argv": ["true"], "environment": "qa"})
        held = celery_client.send_task("tests.ops.hold", args=[4], job_type="build")
        for _ in range(5):
            celery_client.send_task("tests.noop", job_type="build")

        def busy_metrics():
            text = get(f"{server.url}/metrics")[1]
            return text if value(text, "sentinel_worker_active_tasks", worker="mw") == 1 else None
        text = wait_for(busy_metrics, 30, 0.3, "the worker to report its active task")
        assert value(text, "sentinel_workers", state="online") == 1
        assert value(text, "sentinel_queue_length", queue="deploy") == 3
        assert value(text, "sentinel_queue_oldest_message_age_seconds", queue="deploy") > 0
        assert value(text, "sentinel_worker_utilization", worker="mw") == 1.0
        assert value(text, "sentinel_cluster_utilization") == 1.0
        assert value(text, "sentinel_tasks_in_flight", state="queued") >= 3
        assert value(text, "sentinel_up") == 1

        # Fully busy: degraded (utilization), with the reasons; exit code 0.
        health = json.loads(get(f"{server.url}/cluster/health")[1])
        assert health["status"] == "degraded"
        assert "utilization_high" in {r["alert"] for r in health["reasons"]}
        out = runner.invoke(main, ["cluster", "health", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["status"] == "degraded"

        assert held.get(timeout=60) == 4

        # Schedule-to-start latency and outcomes arrive from the pool child (flushed once a second).
        def latency():
            text = get(f"{server.url}/metrics")[1]
            n = value(text, "sentinel_schedule_to_start_seconds_count", queue="build")
            return text if n and n >= 6 and value(text, "sentinel_tasks_completed_total", state="SUCCESS") >= 6 \
                else None
        text = wait_for(latency, 30, 0.3, "latency samples from the worker")
        assert value(text, "sentinel_schedule_to_start_seconds_bucket", queue="build", le="+Inf") >= 6
        # the noops waited behind the 4-second task on a single slot
        assert value(text, "sentinel_schedule_to_start_seconds_sum", queue="build") > 3.0

        out = runner.invoke(main, ["cluster", "metrics", "--json"])
        assert out.exit_code == 0, out.output
        data = json.loads(out.output)
        assert data["totalWorkers"] == 1 and data["healthyWorkers"] == 1 and data["totalCapacity"] == 1
        assert data["taskMetrics"]["queues"]["deploy"]["length"] == 3
        assert data["taskMetrics"]["totals"]["SUCCESS"] >= 6
        assert data["taskMetrics"]["scheduleToStart"]["build"]["count"] >= 6
        (wm,) = data["workerMetrics"]
        assert wm["id"] == "mw" and wm["status"] == "online" and wm["lastHeartbeat"].endswith("+00:00")
        assert {"timestamp", "avgUtilization", "utilizedCapacity", "lockMetrics"} <= data.keys()
        text_out = runner.invoke(main, ["cluster", "metrics"]).output
        assert "1 healthy of 1 live" in text_out and "deploy" in text_out and "mw" in text_out
    finally:
        server.stop()


def test_lease_and_mirror_metrics(sentinel_env, rclient, namespace):
    a = try_acquire("deploy:prod", 60, worker="w-a")
    try:
        try_acquire("deploy:prod", 60, worker="w-b")
    except LockContended:
        pass
    # what the GitHub mirror leaves in Redis: request counters, the budget it learnt, an outbox event
    rclient.hset(f"{namespace}github:status", mapping={"requests:200": 40, "requests:403": 2})
    rclient.hset(f"{namespace}github:budget", mapping={"limit": 5000, "remaining": 120})
    from sentinel_celery.state.outbox import append
    assert append("worker", "w-a", {"state": "online"})
    server = serve_metrics(get_config(), host="127.0.0.1", port=0)
    try:
        text = get(f"{server.url}/metrics")[1]
        assert value(text, "sentinel_leases_held") == 1
        assert value(text, "sentinel_lease_acquisitions_total") == 1
        assert value(text, "sentinel_lease_conflicts_total") == 1
        assert value(text, "sentinel_failovers_total") == 0  # the failover module reports, nothing failed
        assert value(text, "sentinel_github_requests_total", status="403") == 2
        assert value(text, "sentinel_github_rate_limit_remaining") == 120
        assert value(text, "sentinel_github_outbox_depth") == 1
        assert value(text, "sentinel_github_mirror_lag_seconds") >= 0
        assert get(f"{server.url}/health") == (200, json.dumps({"status": "ok"}, indent=2))
        assert get(f"{server.url}/nope")[0] == 404
        metrics = json.loads(get(f"{server.url}/cluster/metrics")[1])
        assert metrics["lockMetrics"]["conflictRate"] == 0.5
        reasons = {r["alert"] for r in json.loads(get(f"{server.url}/cluster/health")[1])["reasons"]}
        assert "github_budget_low" in reasons  # 120 < the default 500
    finally:
        server.stop()
        a.release()


def test_metrics_endpoint_reports_redis_down(sentinel_env):
    from sentinel_celery.config import load_config
    cfg = load_config(overrides={"redis.url": "redis://127.0.0.1:1/0"})
    server = serve_metrics(cfg, host="127.0.0.1", port=0)
    try:
        assert value(get(f"{server.url}/metrics")[1], "sentinel_up") == 0
        assert get(f"{server.url}/health")[0] == 503
    finally:
        server.stop()


def test_quantile_from_cumulative_buckets():
    bounds = [*BUCKETS, float("inf")]
    buckets = [(b, 0) for b in bounds]
    assert quantile(buckets, 0.5) is None
    # 10 samples <= 0.1 s, 10 more <= 1 s
    cum = [(b, 0 if b < 0.1 else 10 if b < 1.0 else 20) for b in bounds]
    assert quantile(cum, 0.5) == 0.1
    assert 0.5 < quantile(cum, 0.95) <= 1.0


def test_sentinel_monitor_serves_metrics_and_health(sentinel_env, tmp_path):
    import subprocess
    import sys
    import urllib.request

    from sentinel_celery.cluster.processes import wait_for
    from sentinel_celery.ops.embedded import free_port

    port = free_port()
    log = open(tmp_path / "monitor.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_celery.cli", "monitor", "--metrics-port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except OSError:
                return None
        status, body = wait_for(lambda: get("/metrics"), 60, message="the monitor's /metrics")
        assert status == 200 and "sentinel_workers" in body
        status, body = get("/health")
        assert status == 200 and '"status"' in body
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
