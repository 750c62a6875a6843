"""Log shipping in a worker: the centralized-log handler (state/logs.py) on Celery's loggers.

Installed on ``after_setup_logger`` and ``after_setup_task_logger``, so both the worker's loggers and
the non-propagating task logger ship; pool children inherit it through fork. Buffered records are
flushed when a pool child or the worker shuts down.
"""
from __future__ import annotations

from celery import signals

from sentinel_celery.config import Config
from sentinel_celery.state.logs import flush_quietly, install_handler


def connect_log_signals(cfg: Config) -> None:
    """Ship logs from any worker of this process (connected once, whatever the number of apps)."""
    def on_setup_logger(sender=None, logger=None, **kwargs):
        if logger is not None:
            install_handler(cfg, (logger,))

    signals.after_setup_logger.connect(on_setup_logger, weak=False, dispatch_uid="sentinel.logs.logger")
    signals.after_setup_task_logger.connect(on_setup_logger, weak=False, dispatch_uid="sentinel.logs.task_logger")
    signals.worker_process_shutdown.connect(flush_quietly, weak=False, dispatch_uid="sentinel.logs.child_exit")
    signals.worker_shutdown.connect(flush_quietly, weak=False, dispatch_uid="sentinel.logs.shutdown")
