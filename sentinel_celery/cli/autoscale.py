"""``sentinel autoscale status|run``: the autoscaler (cluster/autoscale.py) from the command line."""
from __future__ import annotations

import json
import time

import click

from sentinel_celery.cli.common import celery_app, emit, handles_errors, json_option
from sentinel_celery.cluster.autoscale import AutoscaleDuty, status_report
from sentinel_celery.config import get_config


@click.group("autoscale", help="Auto-scaling: policy, load, last decision.")
def autoscale_group() -> None:
    pass


@autoscale_group.command("status", help="Policy, live load, what the policy would do now, and the last decision.")
@json_option
@handles_errors
def autoscale_status(as_json):
    data = status_report(celery_app())

    def render(d):
        p, load, now, last = d["policy"], d["load"], d["would_do_now"], d["last_decision"]
        lines = [
            f"autoscale        {'enabled' if d['enabled'] else 'disabled'} (scaler: {d['scaler']})",
            f"policy           {p['min_workers']}..{p['max_workers']} workers, up {p['step']} when util > "
            f"{p['up_utilization']} and queued > {p['up_queued']}, down {p['step']} when util < "
            f"{p['down_utilization']} and queued < {p['down_queued']}, cooldown {p['cooldown_seconds']}s",
            f"load now         {load['workers']} worker(s), {load['running']}/{load['slots']} slots busy "
            f"({load['utilization']:.0%}), {load['queued']} queued",
            f"policy says      {now['action']} -> {now['desired']} ({now['reason']})",
        ]
        if last:
            lines.append(f"last decision    {last.get('action')} {last.get('current')} -> {last.get('desired')} "
                         f"({last.get('reason')}), {time.time() - float(last.get('at') or 0):.0f}s ago"
                         + (f"; error: {last['error']}" if last.get("error") else ""))
        if d["draining"]:
            lines.append(f"draining         {', '.join(d['draining'])}")
        return "\n".join(lines)
    emit(data, as_json, render)


@autoscale_group.command("run", help="Run the autoscaler in the foreground (e.g. with the local scaler); "
                                     "only one process in the cluster acts at a time (fenced lease).")
@click.option("--once", is_flag=True, help="Evaluate once and exit.")
@handles_errors
def autoscale_run(once):
    cfg = get_config()
    duty = AutoscaleDuty(celery_app(), cfg, owner="autoscale-cli")
    interval = cfg.get("distributed.autoscale.intervalMs") / 1000.0
    try:
        while True:
            d = duty.step()
            if d is None:
                click.echo(json.dumps({"action": "none", "reason": "another process holds the autoscaler lease"}))
            else:
                click.echo(json.dumps({"action": d.action, "current": d.current, "desired": d.desired,
                                       "reason": d.reason}))
            if once:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        duty.autoscaler.wait_for_drains(timeout=0)
        duty.release()
