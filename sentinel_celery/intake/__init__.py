"""The intake: GitHub as a way in — webhooks and issue commands start builds, tests and deploys.

The rest of Sentinel writes its state into GitHub; this layer reads from it. Modules, one concern each:

* :mod:`.rules`   — templates and rules from ``github.intake`` (what an event may start, which
  parameters it may fill)
* :mod:`.guard`   — signatures, replayed deliveries, the sender's permission, per-issue rate limits
* :mod:`.intake`  — one event → one decision → the job sent (or one log line and one short reply)
* :mod:`.server`  — the HTTP receiver (``sentinel intake serve``) and the inbox processors
* :mod:`.poll`    — poll mode with conditional requests, for clusters without a public URL
* :mod:`.duty`    — the same as a worker duty, run by the holder of the ``sentinel:intake`` lease

The command is cli/intake.py; the setup on a real repository is docs/intake.md.

This layer may import: cluster/, github/ (the client, its budget, render), task, worker/ (the duty
thread), state/, routing, config. ``plugin.install`` wires the duty in; nothing below imports this.
"""
from __future__ import annotations

from celery import Celery

from sentinel_celery.config import Config
from sentinel_celery.intake.duty import connect_intake


def connect(app: Celery, cfg: Config) -> None:
    """Run the intake duty in this app's workers when ``github.intake.inWorkers`` is on; called by ``install()``."""
    if cfg.get("github.intake.inWorkers") and cfg.get("github.intake.mode") != "off":
        connect_intake()
