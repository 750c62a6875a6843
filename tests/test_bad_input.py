"""Bad input that used to break a guarantee or end in a traceback: exceptions that come back from
the result backend intact, refused timings and capacities, malformed URLs and ports."""
import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import ConfigError, load_config, redact_url
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import LeaseLost, LockContended, try_acquire


def test_lock_contended_comes_back_from_the_result_backend_intact(workers, celery_client):
    workers.start("wx", queues=["test"], concurrency=1)
    holder = try_acquire("res:shared", 60, worker="someone")
    try:
        with pytest.raises(LockContended) as err:
            celery_client.send_task("tests.contend_fail", args=["shared"]).get(timeout=30)
    finally:
        holder.release()
    exc = err.value
    assert exc.name == "res:shared" and exc.token == holder.token and exc.holder == holder.owner
    assert str(exc).startswith(f"lease 'res:shared' is held by another owner (held by {holder.owner}, "
                               f"token {holder.token}, expires in ")
    assert str(type(exc)(*exc.args)) == str(exc)


def test_lease_lost_comes_back_from_the_result_backend_intact(workers, celery_client, rclient, namespace):
    workers.start("wy", queues=["test"], concurrency=1)
    r = celery_client.send_task("tests.leased", args=["stolen"], kwargs={"sleep": 4})

    def started():
        return [json.loads(x) for x in rclient.lrange(f"{namespace}test:leased", 0, -1)]
    token = wait_for(started, 30, message="the leased task to start")[0]["token"]
    rclient.delete(f"{namespace}lease:res:stolen")  # its TTL ran out, say, and another owner took it
    thief = try_acquire("res:stolen", 60, worker="thief")
    try:
        with pytest.raises(LeaseLost) as err:
            r.get(timeout=30)
    finally:
        thief.release()
    assert err.value.name == "res:stolen" and err.value.token == token
    assert str(err.value) == (f"lease 'res:stolen' (token {token}) was lost: it expired or another owner "
                              f"holds it now")


# --- timings and capacities -------------------------------------------------------------------------

def write_shared(config_dir, data):
    (config_dir / "shared.json").write_text(json.dumps(data))
    return str(config_dir / "shared.json")


@pytest.mark.parametrize("section, key, value, allowed", [
    ("heartbeat", "intervalMs", 0, "allowed range: 50 to 600000 ms"),
    ("heartbeat", "staleThresholdMs", -5, "allowed range: 100 to 86400000 ms"),
    ("locking", "ttlSeconds", -1, "allowed range: 1 to 604800 s"),
    ("locking", "retryAttempts", -2, "allowed range: 0 to 100"),
])
def test_config_check_refuses_timings_out_of_range_naming_key_file_and_range(tmp_path, section, key, value,
                                                                             allowed):
    path = write_shared(tmp_path, {"distributed": {section: {key: value}}})
    out = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path)], env={"WORKER_ID": ""})
    assert out.exit_code == 1, out.output
    assert f"{path}: 'distributed.{section}.{key}' is {value}; {allowed}" in out.output
    assert "configuration OK" not in out.output


def test_config_check_refuses_a_negative_worker_max_tasks_naming_the_variable(tmp_path):
    write_shared(tmp_path, {})
    out = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path)],
                             env={"WORKER_MAX_TASKS": "-3"})
    assert out.exit_code == 1, out.output
    assert ("environment: WORKER_MAX_TASKS='-3' is out of range for capacity.maxConcurrentTasks; "
            "allowed range: 1 to 10000") in out.output


def test_stale_threshold_must_exceed_the_heartbeat_interval(tmp_path):
    path = write_shared(tmp_path, {"distributed": {"heartbeat": {"intervalMs": 2000, "staleThresholdMs": 2000}}})
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={})
    assert err.value.errors == [f"{path}: 'distributed.heartbeat.staleThresholdMs' (2000 ms) must be greater "
                                f"than 'distributed.heartbeat.intervalMs' (2000 ms, from {path})"]
    write_shared(tmp_path, {"distributed": {"heartbeat": {"staleThresholdMs": 1500}}})  # the default is 2000
    with pytest.raises(ConfigError, match=r"\(2000 ms, from defaults\)"):
        load_config(tmp_path, environ={})
    write_shared(tmp_path, {"distributed": {"heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500}}})
    cfg = load_config(tmp_path, environ={"WORKER_MAX_TASKS": "4"})
    assert cfg.source_of("distributed.heartbeat.intervalMs") == path
    assert cfg.source_of("worker:capacity.maxConcurrentTasks") == "environment (WORKER_MAX_TASKS)"
    assert cfg.source_of("redis.url") == "defaults"


@pytest.mark.parametrize("env, shared, expected", [
    ({}, {"distributed": {"heartbeat": {"intervalMs": 0}}}, "'distributed.heartbeat.intervalMs' is 0"),
    ({"WORKER_MAX_TASKS": "-3"}, {}, "WORKER_MAX_TASKS='-3' is out of range"),
    ({"REDIS_URL": "redis://127.0.0.1:notaport/0"}, {}, "the port 'notaport' is not a number"),
])
def test_a_worker_with_an_invalid_configuration_exits_78_with_one_line(workers, config_dir, env, shared,
                                                                       expected):
    write_shared(config_dir, shared)
    w = workers.start("wbad", queues=["build"], env=env, wait=False)
    wait_for(lambda: not w.alive(), 60, message="the worker to exit")
    log = w.log()
    assert w.proc.returncode == 78, log
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sentinel: configuration error: ") and expected in lines[0], log
    assert "Traceback" not in log and "Unable to load" not in log


# --- one line for malformed URLs, ports and durations ---------------------------------------------

def cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "sentinel_celery.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def every_command():
    """Every `sentinel` command with its required arguments (the hub and the demo use no configured Redis)."""
    found = []

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        elif path[0] not in ("hub", "demo"):
            required = [[p.opts[0], "x"] if isinstance(p, click.Option) else ["x"] for p in cmd.params if p.required]
            found.append([*path, *(a for pair in required for a in pair)])
    walk(main, [])
    return found


SOME_COMMANDS = [["config", "check"], ["workers", "list"], ["locks", "list"], ["logs"], ["monitor"], ["mirror"],
                 ["metrics", "serve"], ["flower"], ["memory", "get", "k"]]


@pytest.mark.parametrize("url, problem, every", [
    ("http://user:hunter2@127.0.0.1:6379/0", "it must start with redis://", True),
    ("redis://127.0.0.1:notaport/0", "the port 'notaport' is not a number", False),
])
def test_every_command_says_one_line_for_a_malformed_redis_url(sentinel_env, url, problem, every):
    commands = every_command() if every else SOME_COMMANDS
    assert len(commands) > (25 if every else 5)
    procs = [(argv, cli(*argv, env={"REDIS_URL": url})) for argv in commands]
    for argv, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode not in (0, None), (argv, out, err)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert len(lines) == 1, (argv, out + err)
        assert "'redis.url'" in lines[0] and problem in lines[0] and "environment (REDIS_URL)" in lines[0], argv
        assert "hunter2" not in lines[0]


def test_ports_out_of_range_and_a_huge_since_are_one_line(sentinel_env):
    hub = cli("hub", "--port", "99999")
    metrics = cli("metrics", "serve", "--port", "-1")
    logs = cli("logs", "--since", "99999999999d")
    for proc, expected in ((hub, "'--port': 99999 is not in the range 0<=x<=65535"),
                           (metrics, "'--port': -1 is not in the range 0<=x<=65535")):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and expected in err and "Traceback" not in err, err
    out, err = logs.communicate(timeout=60)
    assert logs.returncode == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[0] == ("sentinel: --since 99999999999d reaches back before 1970; showing records of "
                                   "any age")


def test_a_redis_url_given_in_code_is_checked_too_and_its_password_never_shown():
    with pytest.raises(ConfigError) as err:
        get_redis("redis://:s3cret@127.0.0.1:notaport/0")
    assert str(err.value) == ("Redis URL 'redis://:***@127.0.0.1:notaport/0' is not usable: the port 'notaport' is "
                              "not a number from 1 to 65535")
    assert redact_url("rediss://user:s3cret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
