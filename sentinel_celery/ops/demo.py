"""``sentinel demo``: the whole product on one machine with only Python, in about a minute.

It uses ``REDIS_URL`` if it answers, else an embedded Redis (``--broker amqp://…`` puts the task
messages on RabbitMQ; Sentinel's state stays in that Redis); starts ``sentinel hub`` (the local
GitHub API) unless a real GitHub is configured; starts three workers in different regions with
different capacities (build, test + build, deploy), the monitor with its metrics endpoint, and
Flower; enqueues build → test → deploy chains for a few projects, with commit SHAs and linked
issues, deploys holding a lease on their environment; kills the worker running a build to show
failover; with the local hub, comments ``/deploy staging`` on the billing issue as a user with write
access, which the hub delivers as a signed webhook to the intake (``sentinel intake serve``, run in
this process) and which starts the deploy template for staging; prints live progress and a summary.
Every process it started is stopped at the end (``--keep-running`` waits for Ctrl-C first).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from celery import chain

from sentinel_celery.cluster.processes import WorkerProcess, start_worker, wait_for
from sentinel_celery.cluster.snapshot import split_leases
from sentinel_celery.config import get_config, load_config, set_config
from sentinel_celery.github.client import build_github, configured
from sentinel_celery.github.mirror import mirror_status, request_sync
from sentinel_celery.hub import Hub
from sentinel_celery.intake.duty import IntakeService
from sentinel_celery.intake.intake import recent
from sentinel_celery.ops.embedded import ensure_redis, free_port
from sentinel_celery.plugin import create_app
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.leases import get_backend
from sentinel_celery.state.registry import get_registry

PROJECTS = ("web", "api", "billing")
HUB_REPO = "acme/platform"


class DemoFailed(RuntimeError):
    """The demo's workload did not finish in time."""

# worker id, queues, concurrency, region
DEMO_WORKERS = (
    ("demo-build", ["build", "test"], 2, "eu-west"),
    ("demo-test", ["test", "build"], 2, "us-east"),
    ("demo-deploy", ["deploy"], 2, "us-west"),
)


def job_argv(kind: str, project: str, seconds: float) -> list[str]:
    """A stand-in for a real build/test/deploy command: prints progress, takes ``seconds``."""
    script = (
        "import sys, time\n"
        f"steps = {max(int(seconds * 2), 1)}\n"
        "for i in range(steps):\n"
        f"    print('{kind} {project}: step', i + 1, 'of', steps, flush=True)\n"
        f"    time.sleep({seconds} / steps)\n"
        f"print('{kind} {project}: ok')\n"
    )
    return [sys.executable, "-c", script]


@dataclass
class Stack:
    """Everything the demo started, so that all of it is stopped whatever happens."""

    log_dir: Path
    redis_server: object | None = None
    hub: object | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    services: list[subprocess.Popen] = field(default_factory=list)
    intake: IntakeService | None = None

    def service(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.services.append(proc)
        return proc

    def stop(self) -> None:
        if self.intake is not None:
            self.intake.stop()
        for proc in self.services:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.services:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for w in self.workers.values():
            w.stop(timeout=30)
        if self.hub is not None:
            self.hub.stop()
        if self.redis_server is not None:
            self.redis_server.stop()


def _github_env(cfg, stack: Stack, echo) -> dict:
    if configured(cfg):
        echo(f"GitHub: {cfg.get('github.apiUrl')} repo {cfg.get('github.owner')}/{cfg.get('github.repo')} (configured)")
        return {}
    stack.hub = Hub(db=str(stack.log_dir / "hub.sqlite"), repos=[HUB_REPO])
    stack.hub.start()
    owner, repo = HUB_REPO.split("/")
    echo(f"GitHub: local hub at {stack.hub.base_url} (sentinel hub; no GitHub account needed)")
    return {"GITHUB_API_URL": stack.hub.base_url, "GITHUB_TOKEN": stack.hub.token, "GITHUB_OWNER": owner,
            "GITHUB_REPO": repo}


def _seed_github(cfg, env: dict) -> dict[str, dict]:
    """One issue and one commit per project, so statuses and comments have somewhere to go."""
    gh = build_github(cfg)
    repo = gh.get_repo(f"{cfg.get('github.owner')}/{cfg.get('github.repo')}")
    seeded = {}
    suffix = uuid.uuid4().hex[:6]
    for project in PROJECTS:
        issue = repo.create_issue(title=f"Release {project} ({suffix})",
                                  body=f"Build, test and deploy `{project}`; Sentinel reports progress here.")
        commit = repo.create_file(f"{project}/VERSION-{suffix}", f"{project}: bump version", f"1.{len(seeded)}.0\n")
        seeded[project] = {"issue": issue.number, "sha": commit["commit"].sha}
    return seeded


DEPLOY_COMMAND = "/deploy staging"


def _start_intake(app, stack: Stack, seeded: dict[str, dict], echo) -> dict:
    """The intake behind the hub's webhooks, and a ``/deploy staging`` comment on the billing issue."""
    secret = uuid.uuid4().hex
    script = "import sys, time\nprint('deploy billing to', sys.argv[1], '(asked in the issue)')\ntime.sleep(1)\n"
    cfg = load_config(overrides={
        "github.webhookSecret": secret,
        "github.intake.templates": {"deploy": {
            "type": "deploy", "argv": [sys.executable, "-c", script, "{env}"], "environment": "{env}",
            "params": {"env": {"allowed": ["staging", "production"]}}}},
        "github.intake.rules": [{"on": "issue_comment", "command": "/deploy", "template": "deploy",
                                 "params": ["env"]}],
    })
    stack.intake = IntakeService(app, cfg, mode="webhook", port=0).start()
    stack.hub.add_webhook(stack.intake.url, secret, repos=[HUB_REPO], events=["issue_comment"])
    lead = stack.hub.add_token(login="release-lead", access="write")
    number = seeded["billing"]["issue"]
    stack.hub.client(lead).get_repo(HUB_REPO).get_issue(number).create_comment(DEPLOY_COMMAND)
    echo(f"@release-lead commented `{DEPLOY_COMMAND}` on issue #{number}; the hub delivers it as a signed "
         f"webhook to the intake at {stack.intake.url}")
    return {"issue": number, "result": None}


def _intake_result(app, cfg, intake: dict):
    """The deploy the comment started, once the intake sent it."""
    if intake["result"] is None:
        for outcome in recent(get_redis(cfg.redis_url), cfg.namespace):
            if outcome["result"] == "queued" and outcome["event"] == "issue_comment":
                intake["result"] = app.AsyncResult(outcome["task_ids"][0])
    return intake["result"]


def _progress_line(app, results, registry, leases) -> tuple[str, dict]:
    # leases first: a job takes its lease after its STARTED state is stored, so none is counted
    # held whose task still reads as waiting
    jobs, cluster = split_leases(leases.held())
    states: dict[str, int] = {}
    for r in results:
        states[r.state] = states.get(r.state, 0) + 1
    workers = registry.workers()
    online = sum(1 for w in workers if w.status == "online")
    line = (f"  tasks: {states.get('SUCCESS', 0)} done, {states.get('STARTED', 0)} running, "
            f"{states.get('PENDING', 0) + states.get('RETRY', 0) + states.get('RECEIVED', 0)} waiting, "
            f"{states.get('FAILURE', 0)} failed | workers online {online}/{len(workers)} | "
            f"job leases held {len(jobs)} (+{len(cluster)} leader leases of the cluster)")
    return line, states


def run_demo(redis_url: str, *, broker_url: str = "", keep_running: bool = False, no_kill: bool = False, no_flower: bool = False,
             timeout: float = 240, echo: Callable[[str], None] = print) -> None:
    """The demo; see the module docstring. Raises :class:`DemoFailed` if the workload does not finish."""
    started_at = time.monotonic()
    stack = Stack(Path(tempfile.mkdtemp(prefix="sentinel-demo-")))
    namespace = f"demo-{uuid.uuid4().hex[:6]}:"
    try:
        url, stack.redis_server = ensure_redis(redis_url)
        echo(f"Redis: {url}" + (" (embedded, started for this demo)" if stack.redis_server else ""))
        env = {"REDIS_URL": url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace}
        if broker_url:
            env["SENTINEL_BROKER_URL"] = broker_url
            where = urlsplit(broker_url)
            echo(f"Broker: {where.scheme}://{where.hostname}:{where.port or 5672}{where.path or '/'} "
                 f"(Sentinel's state stays in Redis)")
        os.environ.update(env)
        cfg = load_config()
        github_env = _github_env(cfg, stack, echo)
        os.environ.update(github_env)
        env.update(github_env)
        cfg = load_config()
        set_config(cfg)
        seeded = _seed_github(cfg, env)


        app = create_app("sentinel_demo", config=cfg)
        full_env = {**os.environ, **env}
        for worker_id, queues, concurrency, region in DEMO_WORKERS:
            stack.workers[worker_id] = start_worker(
                worker_id, env={**env, "WORKER_REGION": region, "WORKER_MAX_TASKS": str(concurrency)},
                log_dir=stack.log_dir, queues=queues, concurrency=concurrency, loglevel="INFO")
        metrics_port = free_port()
        stack.service("monitor", [sys.executable, "-m", "sentinel_celery.cli", "monitor", "--metrics-port",
                                  str(metrics_port)], full_env)
        flower_url = None
        if not no_flower:
            flower_port = free_port()
            stack.service("flower", [sys.executable, "-m", "sentinel_celery.cli", "flower", "--port",
                                     str(flower_port)], full_env)
            flower_url = f"http://127.0.0.1:{flower_port}/sentinel"
        registry = get_registry(cfg)
        leases = get_backend()
        wait_for(lambda: sum(1 for w in registry.workers() if w.status == "online") == len(DEMO_WORKERS),
                 60, message="the demo workers to register")
        for w in sorted(registry.workers(), key=lambda w: w.id):
            echo(f"  worker {w.id:<12} queues={','.join(q for q in w['queues'] if not q.startswith('sentinel'))}"
                 f" slots={w.max_tasks} region={w['metadata'].get('region')}")

        build, test, deploy = (app.tasks[f"workers.{k}.run"] for k in ("build", "test", "deploy"))
        chains = []
        for i, project in enumerate(PROJECTS):
            link = seeded[project]
            common = {"github_issue": link["issue"], "sha": link["sha"]}
            environment = "production" if project != "billing" else "staging"
            chains.append(chain(
                build.si(argv=job_argv("build", project, 6 + i), **common),
                test.si(argv=job_argv("test", project, 3), **common),
                deploy.si(argv=job_argv("deploy", project, 2), environment=environment, **common),
            ).apply_async())
        echo(f"enqueued {len(chains)} build → test → deploy chains ({', '.join(PROJECTS)}); "
             f"deploys hold a lease on their environment")
        intake = _start_intake(app, stack, seeded, echo) if stack.hub is not None else None

        kill = {"at": None, "worker": None, "task": None}

        def all_results():
            out = []
            for c in chains:
                node = c
                while node is not None:
                    out.append(node)
                    node = node.parent
            return out

        last_line = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            results = all_results()
            line, states = _progress_line(app, results, registry, leases)
            if line != last_line:
                echo(line)
                last_line = line
            if not no_kill and kill["at"] is None:
                victim = _busy_worker(registry, ("demo-build", "demo-test"))
                if victim is not None:
                    time.sleep(1.0)  # let it be properly in the middle of its build
                    stack.workers[victim.id].kill9()
                    kill.update(at=time.time(), worker=victim.id)
                    echo(f"  ** killed worker {victim.id} (kill -9) while it was running "
                         f"{victim.active} task(s); the monitor must notice and re-run them elsewhere")
            if kill["at"] and "event" not in kill:
                events = [e for e in read_events(app_redis(cfg), namespace, limit=10) if e.get("worker") == kill["worker"]]
                if events:
                    kill["event"] = events[0]
                    echo(f"  ** failover: {kill['worker']} declared dead and recovered "
                         f"{_detected_after(events[0], kill['at']):.1f}s after the kill "
                         f"({len(events[0].get('tasks_recovered') or [])} message(s) given back, "
                         f"{len(events[0].get('leases_released') or [])} lease(s) fenced)")
            commanded = _intake_result(app, cfg, intake) if intake else None
            if all(c.ready() for c in chains) and (intake is None or (commanded is not None and commanded.ready())):
                break
            time.sleep(0.5)
        else:
            raise DemoFailed(f"the workload did not finish within {timeout:.0f}s; logs in {stack.log_dir}")

        echo("workload finished; flushing the GitHub mirror ...")
        _wait_mirror(cfg)
        _summary(echo, cfg, app, chains, all_results(), kill, leases, stack, seeded, flower_url, metrics_port,
                 started_at, keep_running, intake)
        if keep_running:
            echo("\n--keep-running: everything stays up; press Ctrl-C to stop.")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
    finally:
        stack.stop()
        _forget_namespace(namespace)
        echo("demo stopped; every process it started has exited")


def _busy_worker(registry, candidates):
    """A candidate worker in the middle of a task (as of its last beat), if any."""
    for worker_id in candidates:
        info = registry.get(worker_id)
        if info is None or info.active == 0:
            continue
        return info
    return None


def app_redis(cfg):
    return get_redis(cfg.redis_url)


def _detected_after(event: dict, killed_at: float) -> float:
    for key in ("recovered_at", "detected_at"):
        value = event.get(key)
        if isinstance(value, (int, float)):
            return value / 1000.0 - killed_at if value > 1e11 else value - killed_at
    return float("nan")


def _wait_mirror(cfg, timeout: float = 60) -> None:
    request_sync(cfg)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = mirror_status(cfg) or {}
        if status.get("outbox_depth", status.get("pending", 0)) == 0 and status.get("last_flush"):
            return
        time.sleep(1)


def _summary(echo, cfg, app, chains, results, kill, leases, stack, seeded, flower_url, metrics_port, started_at,
             keep_running=False, intake=None):
    done = sum(1 for r in results if r.state == "SUCCESS")
    failed = sum(1 for r in results if r.state == "FAILURE")
    echo("\n=== summary ===")
    echo(f"tasks: {done} succeeded, {failed} failed, {len(results)} in {len(chains)} chains "
         f"({time.monotonic() - started_at:.0f}s in all)")
    if kill.get("event"):
        echo(f"failover: worker {kill['worker']} killed; declared dead and its work given back after "
             f"{_detected_after(kill['event'], kill['at']):.1f}s; what it was running finished on another worker")
    elif kill.get("at"):
        echo("failover: a worker was killed, but no failover event was seen")
    stats = leases.stats()
    echo("leases: " + ", ".join(f"{s['name']} (last token {s['last_token']}, {s['conflicts']} conflicts)"
                                 for s in stats if s["name"].startswith("deploy:")))
    for r in chains:
        value = r.result if r.state == "SUCCESS" else None
        if isinstance(value, dict):
            echo(f"  deploy on {value['worker']} with lease token {value['lease_token']}: {value['output_tail'].splitlines()[-1]}")
    commanded = intake["result"] if intake else None
    if commanded is not None and commanded.state == "SUCCESS":
        value = commanded.result
        echo(f"intake: `{DEPLOY_COMMAND}` on issue #{intake['issue']} (a webhook from the hub) started the deploy "
             f"template on {value['worker']} with lease deploy:staging token {value['lease_token']}: "
             f"{value['output_tail'].strip().splitlines()[-1]}")
    elif intake is not None:
        echo(f"intake: `{DEPLOY_COMMAND}` on issue #{intake['issue']} did not finish "
             f"({commanded.state if commanded is not None else 'never started'})")
    if stack.hub is not None:
        requests = stack.hub.requests()
        writes = sum(1 for q in requests if q.method != "GET")
        echo(f"GitHub: {len(requests)} requests to the hub ({writes} writes) for {len(results)} tasks")
        owner_repo = HUB_REPO
        echo(f"  issues: {stack.hub.base_url}/{owner_repo}/issues")
        for project, link in seeded.items():
            echo(f"  {project}: {stack.hub.base_url}/{owner_repo}/issues/{link['issue']}")
    if flower_url:
        echo(f"Flower: {flower_url}")
    echo(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
    if not keep_running:
        echo("(these URLs stop answering when the demo ends, just below: run `sentinel demo --keep-running` "
             "to keep the hub, Flower, the metrics and the workers up until Ctrl-C)")
    echo(f"logs of every process: {stack.log_dir}")


def _forget_namespace(namespace: str) -> None:
    try:
        client = get_redis(get_config().redis_url)
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    except Exception:
        pass
