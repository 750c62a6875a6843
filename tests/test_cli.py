"""The sentinel CLI against a real registry and real leases."""
import json
import subprocess
import sys

from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.state.leases import try_acquire


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_workers_list_and_capacity_show_a_real_worker(workers):
    workers.start("cli-w", queues=["build", "test"], concurrency=2, env={"WORKER_REGION": "ap-south"})
    out = run("workers", "list", "--json")
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert row["id"] == "cli-w" and row["status"] == "online" and row["region"] == "ap-south"
    assert row["queues"] == ["build", "sentinel.direct.cli-w", "test"] and row["incarnation"] >= 1
    text = run("workers", "list").output
    assert "cli-w" in text and "online" in text and "WORKER" in text
    cap = json.loads(run("workers", "capacity", "--json").output)
    assert {r["type"]: r["slots"] for r in cap["by_type"]} == {"build": 2, "deploy": 2, "test": 2}


def test_locks_list_stats_distribution(sentinel_env):
    a = try_acquire("deploy:prod", 60, worker="w-a")
    b = try_acquire("deploy:qa", 60, worker="w-b")
    b.release()
    b2 = try_acquire("deploy:qa", 60, worker="w-a")
    held = json.loads(run("locks", "list", "--json").output)
    assert {(h["name"], h["worker"], h["token"]) for h in held} == {("deploy:prod", "w-a", a.token),
                                                                     ("deploy:qa", "w-a", b2.token)}
    stats = json.loads(run("locks", "stats", "--metric", "acquisitions", "--json").output)
    assert stats[0]["name"] == "deploy:qa" and stats[0]["acquisitions"] == 2
    dist = json.loads(run("locks", "distribution", "--json").output)
    assert {r["worker"]: r["held"] for r in dist} == {"w-a": 2}
    a.release(), b2.release()
    assert "no leases held" in run("locks", "list").output


def test_unreachable_redis_is_one_clear_line_and_nonzero_exit(tmp_path):
    env = {"REDIS_URL": "redis://:s3cret@127.0.0.1:1/0", "SENTINEL_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "sentinel_celery.cli", "workers", "list"],
                          capture_output=True, text=True, env={**__import__("os").environ, **env}, timeout=60)
    assert proc.returncode == 2
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in proc.stderr
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr


def test_celery_subcommand_is_registered():
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "sentinel_celery", "sentinel", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "workers" in proc.stdout and "locks" in proc.stdout and "config" in proc.stdout
