"""Job arguments are checked before the command starts; a command never outlives its task's lease.

Real worker processes run ``workers.deploy.run``; each command records its pid and which earlier
commands were still alive when it started, so an overlap of two deploys to one environment shows.
"""
import copy
import json
import os
import signal
import sys
import time

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.jobs import JobArgumentError, JobFailed, run_command
from tests.conftest import FAST_SHARED

# argv[1] tag, argv[2] directory, argv[3] seconds to sleep (none when the tag ran before: a re-run)
DEPLOY_STEP = r"""
import json, os, pathlib, sys, time
tag, d, sleep = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
def alive(pid):
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
others = {p.stem: int(p.read_text()) for p in d.glob("*.pid")}
if tag in others:  # a re-run of the same task: quick
    sleep = 0
(d / f"{tag}.started").write_text(json.dumps([n for n, pid in others.items() if alive(pid)]))
(d / f"{tag}.pid").write_text(str(os.getpid()))
time.sleep(sleep)
(d / f"{tag}.done").write_text("1")
"""


def step(tag, directory, sleep):
    return [sys.executable, "-c", DEPLOY_STEP, tag, str(directory), str(sleep)]


def started_alongside(directory, tag):
    return json.loads((directory / f"{tag}.started").read_text())


def test_timeout_string_is_refused_before_the_command_starts_and_deploys_do_not_overlap(
        workers, celery_client, tmp_path):
    workers.start("wv", queues=["deploy"], concurrency=2)
    steps = tmp_path / "steps"
    steps.mkdir()
    first = celery_client.send_task("workers.deploy.run", kwargs={
        "argv": step("first", steps, 4), "environment": "prod", "timeout": "600"})
    with pytest.raises(Exception) as err:
        first.get(timeout=30)
    second = celery_client.send_task("workers.deploy.run", kwargs={
        "argv": step("second", steps, 0), "environment": "prod", "timeout": 60})
    assert second.get(timeout=30)["exit_code"] == 0
    assert started_alongside(steps, "second") == [], "the second deploy overlapped the first"
    assert not (steps / "first.started").exists(), "the refused deploy's command ran"
    assert type(err.value).__name__ == "JobArgumentError"
    assert "timeout must be a number" in str(err.value) and "'600'" in str(err.value)


def _shared_with_retry_delay(ms):
    shared = copy.deepcopy(FAST_SHARED)
    shared["distributed"]["locking"]["retryDelayMs"] = ms
    return shared


# the second deploy retries the held lease for 1 + 2 + 4 s: room for the first's 1.5 s soft limit and its
# command's stop on a loaded machine (the suite's 0.2 + 0.4 + 0.8 s ran out once there)
@pytest.mark.parametrize("shared_config", [_shared_with_retry_delay(1000)])
def test_a_soft_time_limit_stops_the_command_before_the_lease_is_released(workers, celery_client, tmp_path):
    workers.start("wsl", queues=["deploy"], concurrency=2)
    steps = tmp_path / "steps"
    steps.mkdir()
    first = celery_client.send_task("workers.deploy.run", kwargs={
        "argv": step("first", steps, 6), "environment": "prod"}, soft_time_limit=1.5)
    wait_for(lambda: (steps / "first.started").exists(), 30, message="the first deploy's command to start")
    second = celery_client.send_task("workers.deploy.run", kwargs={
        "argv": step("second", steps, 0), "environment": "prod"})
    with pytest.raises(Exception) as err:
        first.get(timeout=30)
    assert type(err.value).__name__ == "SoftTimeLimitExceeded"
    assert second.get(timeout=30)["exit_code"] == 0
    assert started_alongside(steps, "second") == [], "the second deploy started while the first's command ran"
    time.sleep(6)
    assert not (steps / "first.done").exists(), "the first deploy's command outlived its task"


@pytest.mark.parametrize("kwargs, message", [
    ({"argv": ["echo", 3]}, "argv[1] must be a string, got int 3"),
    ({"argv": ["echo", None]}, "argv[1] must be a string, got NoneType None"),
    ({"argv": [b"echo"]}, "argv[0] must be a string, got bytes"),
    ({"argv": "echo hi"}, "argv must be a non-empty list of strings"),
    ({"argv": []}, "argv must be a non-empty list of strings"),
    ({"argv": ["echo", "a\0b"]}, "argv[1] contains a NUL"),
    ({"argv": ["true"], "env": {"A=B": "1"}}, "env key 'A=B' must be a non-empty string without '='"),
    ({"argv": ["true"], "env": {"A\0": "1"}}, "without '=' or NUL"),
    ({"argv": ["true"], "env": {"": "1"}}, "env key '' must be a non-empty string"),
    ({"argv": ["true"], "env": {"A": 1}}, "env['A'] must be a string without NUL, got int 1"),
    ({"argv": ["true"], "env": {"A": None}}, "env['A'] must be a string"),
    ({"argv": ["true"], "env": ["A=1"]}, "env must be a mapping"),
    ({"argv": ["true"], "cwd": "/no/such/dir"}, "cwd '/no/such/dir' is not an existing directory"),
    ({"argv": ["true"], "cwd": 5}, "cwd must be a directory path"),
    ({"argv": ["true"], "timeout": "600"}, "timeout must be a number of seconds, got str '600'"),
    ({"argv": ["true"], "timeout": True}, "timeout must be a number of seconds, got bool"),
    ({"argv": ["true"], "timeout": 0}, "timeout must be a positive number"),
    ({"argv": ["true"], "timeout": -1.5}, "timeout must be a positive number"),
    ({"argv": ["true"], "timeout": float("nan")}, "timeout must be a positive number"),
])
def test_bad_arguments_are_refused_before_anything_starts(kwargs, message, tmp_path):
    marker = tmp_path / "ran"
    kwargs = dict(kwargs)
    argv = kwargs.pop("argv")
    if isinstance(argv, list) and argv and argv[0] == "true":
        argv = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    with pytest.raises(JobArgumentError) as err:
        run_command(argv, **kwargs)
    assert message in str(err.value)
    assert not marker.exists()


def test_valid_arguments_still_run(tmp_path):
    out = run_command([sys.executable, "-c", "import os; print(os.environ['GREETING'], os.getcwd())"],
                      env={"GREETING": "hi"}, cwd=str(tmp_path), timeout=30)
    assert out["exit_code"] == 0 and out["output_tail"] == f"hi {tmp_path}"
    assert run_command(("true",), timeout=1)["exit_code"] == 0


def test_job_failed_keeps_its_fields_through_a_rebuild():
    exc = JobFailed("exit code 3; output tail:\nboom", 3, "boom")
    again = type(exc)(*exc.args)
    assert str(again) == str(exc) and again.exit_code == 3 and again.output_tail == "boom"


def test_a_job_argument_error_comes_back_from_a_worker_with_its_message(workers, celery_client):
    workers.start("wa", queues=["build"], concurrency=1)
    r = celery_client.send_task("workers.build.run", kwargs={"argv": ["echo", None]})
    with pytest.raises(JobArgumentError, match=r"argv\[1\] must be a string, got NoneType None"):
        r.get(timeout=30)


def test_a_hard_time_limit_stops_the_command_too(workers, celery_client, tmp_path):
    """Celery kills the pool child running the task; the worker's main process stops the command's group."""
    workers.start("whl", queues=["deploy"], concurrency=1)
    steps = tmp_path / "steps"
    steps.mkdir()
    first = celery_client.send_task("workers.deploy.run", kwargs={
        "argv": step("first", steps, 8), "environment": "prod"}, time_limit=2)
    wait_for(lambda: (steps / "first.pid").exists(), 30, message="the command to start")
    pid = int((steps / "first.pid").read_text())
    with pytest.raises(Exception) as err:
        first.get(timeout=30)
    assert type(err.value).__name__ == "TimeLimitExceeded"
    wait_for(lambda: not alive(pid), 10, message="the command to be stopped")
    time.sleep(7)
    assert not (steps / "first.done").exists(), "the command outlived its task"


def alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def parent_of(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


class TestLostPoolProcess:
    """The re-delivered task retries a held lease for 1 + 2 + 4 s: the freed lease must come within that."""

    @pytest.fixture
    def shared_config(self):
        return _shared_with_retry_delay(1000)

    def test_a_pool_process_killed_with_sigkill_stops_its_command_then_frees_its_lease(self, workers, celery_client,
                                                                                      tmp_path):
        w = workers.start("wk9", queues=["deploy"], concurrency=1)
        steps = tmp_path / "steps"
        steps.mkdir()
        r = celery_client.send_task("workers.deploy.run", kwargs={"argv": step("first", steps, 30), "environment": "prod"})
        wait_for(lambda: (steps / "first.pid").exists(), 30, message="the command to start")
        pid = int((steps / "first.pid").read_text())
        pool_child = parent_of(pid)
        assert pool_child != w.pid
        os.kill(pool_child, signal.SIGKILL)  # the OOM killer, say
        # Celery notices the lost pool process within seconds; the command would sleep 30 s
        wait_for(lambda: not alive(pid), 20, message="the orphaned command to be stopped")
        # the message goes back to the queue (task_reject_on_worker_lost); the re-run takes the freed lease at once
        out = r.get(timeout=60)
        assert out["exit_code"] == 0 and int((steps / "first.pid").read_text()) != pid
        assert started_alongside(steps, "first") == [], "the re-run started while the orphaned command ran"
        log = w.log()
        assert f"stopping its command (process group {pid})" in log
        assert "released lease deploy:prod (token " in log
