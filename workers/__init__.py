"""The built-in job tasks, one module per queue: build, test, deploy.

Each is declared with :func:`job`: a Celery shared task (registered on every app, so the worker of
your own ``install()``-ed app runs them too) whose module attribute — what
``from workers import build; build.run.delay(...)`` calls — always resolves to a Sentinel app: the
current app when ``install()`` made it, else Sentinel's ready app (``sentinel_celery.app``, built from
the configuration). Never Celery's default app, whose broker is ``amqp://localhost``: a script that
created no app would otherwise send its job to whatever answers there. A configuration that does not
load fails with its error list (``ConfigError``) at that first call.
"""
from celery import current_app, shared_task
from celery.local import Proxy

import sentinel_celery


def sentinel_app():
    """The app the built-in jobs send through: the current app if Sentinel is installed in it, else ours."""
    app = current_app._get_current_object()
    if getattr(app, "sentinel_installed", False):
        return app
    return sentinel_celery.app


def job(**options):
    """``@job(name=..., task_type=..., ...)``: a shared task bound, when called, to :func:`sentinel_app`."""
    name = options["name"]

    def decorate(fun):
        shared_task(**options)(fun)
        return Proxy(lambda: sentinel_app().tasks[name])
    return decorate
