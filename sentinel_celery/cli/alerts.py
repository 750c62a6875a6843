"""``sentinel alerts list|check``: the alerts firing now; evaluate the rules now."""
from __future__ import annotations

import sys
import time

import click

from sentinel_celery.cli.common import emit, handles_errors, json_option, table
from sentinel_celery.cluster.alerts import CRITICAL, AlertEvaluator, AlertState, WebhookSink
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis


@click.group("alerts", help="Alert rules and the alerts firing now.")
def alerts_group() -> None:
    pass


@alerts_group.command("list", help="Alerts firing now (as last evaluated by the monitor).")
@json_option
@handles_errors
def alerts_list(as_json):
    cfg = get_config()
    firing = sorted(AlertState(get_redis(cfg.redis_url), cfg.namespace).firing().values(), key=lambda a: a["name"])
    rows = [{**a, "for": f"{time.time() - a['since']:.0f}s"} for a in firing]
    emit(rows, as_json, lambda rs: table(rs, [("name", "ALERT"), ("severity", "SEVERITY"), ("for", "FOR"),
                                              ("summary", "SUMMARY")]) if rs else "no alerts firing")


@alerts_group.command("check", help="Evaluate the rules now, update the firing set and notify sinks; "
                                    "exit code 1 if a critical alert fires.")
@json_option
@handles_errors
def alerts_check(as_json):
    evaluator = AlertEvaluator(get_config())
    transitions = evaluator.tick()
    for sink in evaluator.sinks:
        if isinstance(sink, WebhookSink):
            sink.join(timeout=30)
    firing = sorted(evaluator.state.firing().values(), key=lambda a: a["name"])
    data = {"firing": firing, "transitions": [{"op": t.op, "alert": t.alert["name"]} for t in transitions]}
    emit(data, as_json, lambda d: "\n".join(
        [f"{t['op']:<6} {t['alert']}" for t in d["transitions"]] +
        [f"firing {a['severity']:<8} {a['summary']}" for a in d["firing"]]) or "no alerts firing")
    if any(a["severity"] == CRITICAL for a in firing):
        sys.exit(1)
