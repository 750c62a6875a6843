"""Alert rules (pure, synthetic snapshots), firing state in Redis, and the sinks."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.alerts import (
    AlertEvaluator,
    AlertState,
    GitHubIssueSink,
    LogSink,
    Thresholds,
    Transition,
    WebhookSink,
    evaluate_alerts,
)
from sentinel_celery.config import get_config


def worker(wid, status="online", active=0, capacity=4):
    return {"id": wid, "status": status, "active": active, "reserved": 0, "capacity": capacity,
            "utilization": active / capacity, "processed": 0, "failed": 0, "last_beat": 0, "age_ms": 0,
            "queues": ["build"], "region": "local", "hostname": "h", "incarnation": 1}


def snapshot(workers=(), queues=None, github=None):
    return {"time": time.time(), "workers": list(workers), "queues": queues or {"build": {"length": 0}},
            "github": github}


def names(alerts):
    return {a.name for a in alerts}


def test_healthy_cluster_has_no_alerts():
    assert evaluate_alerts(snapshot([worker("a", active=1), worker("b", active=2)])) == []


def test_healthy_worker_ratio_is_critical_below_threshold_only():
    three_of_four = [worker("a"), worker("b"), worker("c"), worker("d", "stale")]
    alerts = evaluate_alerts(snapshot(three_of_four))
    assert names(alerts) == {"workers_stale"}  # 75 % is not below 75 %
    two_of_three = [worker("a"), worker("b"), worker("c", "stale")]
    alerts = evaluate_alerts(snapshot(two_of_three))
    assert alerts[0].name == "workers_unhealthy" and alerts[0].severity == "critical"
    assert "only 2 of 3" in alerts[0].summary and alerts[0].labels == {"stale": ["c"]}
    # offline workers were declared dead and handled: they do not count against health
    assert evaluate_alerts(snapshot([worker("a"), worker("b", "offline")])) == []
    assert names(evaluate_alerts(snapshot([]))) == {"workers_unhealthy"}
    assert evaluate_alerts(snapshot([]))[0].severity == "critical"


def test_utilization_warning_is_strictly_above_threshold_and_configurable():
    at = [worker("a", active=9, capacity=10)]           # exactly 0.90
    above = [worker("a", active=19, capacity=20)]       # 0.95
    assert evaluate_alerts(snapshot(at)) == []
    (alert,) = evaluate_alerts(snapshot(above))
    assert alert.name == "utilization_high" and alert.severity == "warning" and alert.value == 0.95
    assert evaluate_alerts(snapshot(above), Thresholds(utilization_warning=0.96)) == []
    # stale workers' slots do not count as capacity
    alerts = evaluate_alerts(snapshot([worker("a", active=4, capacity=4), worker("b", "stale", capacity=100)]))
    assert "utilization_high" in names(alerts)


def test_queue_backlog_per_queue():
    queues = {"build": {"length": 101, "oldest_age_seconds": 30.0}, "test": {"length": 100}, "deploy": {"length": 5}}
    alerts = evaluate_alerts(snapshot([worker("a")], queues))
    assert names(alerts) == {"queue_backlog:build"}
    assert "oldest waiting 30s" in alerts[0].summary
    alerts = evaluate_alerts(snapshot([worker("a")], queues), Thresholds(queue_backlog_warning=4))
    assert names(alerts) == {"queue_backlog:build", "queue_backlog:test", "queue_backlog:deploy"}


def test_github_budget_and_outbox_backlog():
    gh = {"rate_limit_remaining": 499, "outbox_depth": 1001}
    assert names(evaluate_alerts(snapshot([worker("a")], github=gh))) == {"github_budget_low", "outbox_backlog"}
    gh = {"rate_limit_remaining": 500, "outbox_depth": 1000}
    assert evaluate_alerts(snapshot([worker("a")], github=gh)) == []
    assert evaluate_alerts(snapshot([worker("a")], github={"rate_limit_remaining": None})) == []


def test_firing_state_dedups_updates_and_resolves(rclient, namespace):
    state = AlertState(rclient, namespace)
    busy = evaluate_alerts(snapshot([worker("a", active=4, capacity=4)]))
    first = state.apply(busy, now=100.0)
    assert [(t.op, t.alert["name"]) for t in first] == [("open", "utilization_high")]
    assert state.apply(busy, now=110.0) == []            # still firing: not announced again
    assert state.firing()["utilization_high"]["since"] == 100.0
    assert state.firing()["utilization_high"]["last_seen"] == 110.0
    full = [worker("a", active=4, capacity=4), worker("b", active=4, capacity=4), worker("c", active=4, capacity=4)]
    worse = evaluate_alerts(snapshot([*full, worker("d", "stale")]))
    ops = sorted((t.op, t.alert["name"]) for t in state.apply(worse, now=120.0))
    assert ops == [("open", "workers_stale")]             # same utilization summary: no update
    changed = evaluate_alerts(snapshot([*full[:2], worker("c", "stale"), worker("d", "stale")]))
    ops = sorted((t.op, t.alert["name"]) for t in state.apply(changed, now=130.0))
    assert ops == [("open", "workers_unhealthy"), ("update", "workers_stale")]
    closed = state.apply([], now=140.0)
    assert sorted((t.op, t.alert["name"]) for t in closed) == [
        ("close", "utilization_high"), ("close", "workers_stale"), ("close", "workers_unhealthy")]
    assert state.firing() == {}
    events = rclient.xrange(f"{namespace}alerts:events")
    assert [e[1]["op"] for e in events].count("close") == 3 and len(events) == 7


def test_two_evaluators_announce_an_alert_once(rclient, namespace):
    a, b = AlertState(rclient, namespace), AlertState(rclient, namespace)
    alerts = evaluate_alerts(snapshot([]))
    b.firing = lambda: {}  # b read the firing set before a wrote it
    assert [t.op for t in a.apply(alerts, now=1.0)] == ["open"]
    assert b.apply(alerts, now=1.0) == []                    # HSETNX lost: no second announcement
    del b.firing
    assert [t.op for t in a.apply([], now=2.0)] == ["close"]
    b.firing = lambda: {"workers_unhealthy": {"name": "workers_unhealthy"}}
    assert b.apply([], now=2.0) == []                        # HDEL lost: no second close


def test_github_issue_sink_appends_open_update_close_events():
    events = []
    sink = GitHubIssueSink(append=lambda kind, key, state, final=False: events.append((kind, key, state, final)))
    alert = {**evaluate_alerts(snapshot([]))[0].as_dict(), "since": 1.0, "last_seen": 1.0}
    for op in ("open", "update", "close"):
        sink.send(Transition(op, alert, 2.0))
    assert [(e[2]["op"], e[2]["state"], e[3]) for e in events] == [
        ("open", "open", False), ("update", "open", False), ("close", "closed", True)]
    assert all(kind == "alert" and key == "workers_unhealthy" and state["labels"] == ["sentinel:alert"]
               for kind, key, state, _ in events)
    assert "no live workers" in events[0][2]["title"] and "resolved" in events[2][2]["body"]


def test_evaluator_appends_to_the_real_outbox(sentinel_env, rclient, namespace):
    from sentinel_celery.state.outbox import outbox_key
    evaluator = AlertEvaluator(get_config(), sinks=[GitHubIssueSink()])
    evaluator.tick(snapshot([]))
    (entry_id, fields), = rclient.xrange(outbox_key(namespace))
    assert fields["k"] == "alert" and fields["o"] == "workers_unhealthy" and fields["f"] == "0"
    assert json.loads(fields["s"])["labels"] == ["sentinel:alert"]


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0
    hang = threading.Event()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).hang.is_set():
            time.sleep(5)
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _hook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_webhook_retries_with_backoff_and_never_blocks():
    _Hook.received, _Hook.fail_first = [], 2
    _Hook.hang.clear()
    server = _hook_server()
    try:
        sink = WebhookSink(f"http://127.0.0.1:{server.server_port}/hook", first_delay=0.05)
        alert = {**evaluate_alerts(snapshot([]))[0].as_dict(), "since": 1.0, "last_seen": 1.0}
        sink.send(Transition("open", alert, 2.0))
        assert sink.join(timeout=30)
        assert sink.delivered == 1 and sink.failed == 0
        (payload,) = _Hook.received
        assert payload["op"] == "open" and payload["alert"]["name"] == "workers_unhealthy"
        assert _Hook.fail_first == 0  # the two 500s were retried

        _Hook.hang.set()  # a slow receiver: the queue fills, send() drops instead of waiting
        slow = WebhookSink(f"http://127.0.0.1:{server.server_port}/hook", max_queue=2, timeout=10)
        started = time.monotonic()
        for _ in range(10):
            slow.send(Transition("update", alert, 3.0))
        assert time.monotonic() - started < 2.0
        assert slow.dropped >= 7
    finally:
        _Hook.hang.clear()
        server.shutdown()


def test_evaluator_tick_and_cli(sentinel_env, rclient, namespace, caplog):
    seen = []

    class Recorder:
        def send(self, t):
            seen.append((t.op, t.alert["name"]))

    evaluator = AlertEvaluator(get_config(), sinks=[LogSink(), Recorder()])
    with caplog.at_level("WARNING", logger="sentinel.alerts"):
        evaluator.tick()  # a real snapshot: this namespace has no workers
    assert seen == [("open", "workers_unhealthy")]
    assert "no live workers" in caplog.text
    assert evaluator.tick() == [] and seen == [("open", "workers_unhealthy")]

    runner = CliRunner()
    out = runner.invoke(main, ["alerts", "list", "--json"])
    assert out.exit_code == 0 and [a["name"] for a in json.loads(out.output)] == ["workers_unhealthy"]
    out = runner.invoke(main, ["alerts", "check"])
    assert out.exit_code == 1 and "critical" in out.output

    # a worker appears (registry entry beating now): the alert resolves, once
    from sentinel_celery.state.registry import get_registry
    get_registry().register("aw", "inst-1", {"queues": ["build"], "concurrency": 2})
    assert [(t.op, t.alert["name"]) for t in evaluator.tick()] == [("close", "workers_unhealthy")]
    out = runner.invoke(main, ["alerts", "check", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["firing"] == []
    assert "no alerts firing" in runner.invoke(main, ["alerts", "list"]).output
