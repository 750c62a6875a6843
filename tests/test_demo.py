"""`sentinel demo` end to end, as a user runs it: real processes, the local GitHub API, a kill -9."""
import os
import re
import subprocess
import sys
from pathlib import Path


def _processes_mentioning(text: str) -> list[str]:
    """Processes of this interpreter (this checkout's virtualenv: another checkout's demo is not ours)
    whose command line mentions ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and cmdline.startswith(sys.executable + " "):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_runs_the_workload_shows_failover_and_leaves_nothing_behind(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("WORKER_ID", None)
    proc = subprocess.run([sys.executable, "-m", "sentinel_celery.cli", "demo", "--timeout", "200"],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "tasks: 9 succeeded, 0 failed, 9 in 3 chains" in out
    assert re.search(r"killed worker demo-(build|test) \(kill -9\)", out), out[-2000:]
    match = re.search(r"declared dead and its work given back after ([\d.]+)s", out)
    assert match, out[-2000:]
    assert float(match.group(1)) < 30
    assert re.search(r"deploy:production \(last token \d+", out)
    assert re.search(r"GitHub: \d+ requests to the hub", out)
    # a `/deploy staging` comment on the billing issue, delivered by the hub's webhook, started the deploy
    assert re.search(r"intake: `/deploy staging` on issue #\d+ \(a webhook from the hub\) started the deploy "
                     r"template on demo-deploy with lease deploy:staging token \d+: deploy billing to staging", out), \
        out[-3000:]
    assert "Flower: http://127.0.0.1:" in out
    assert "run `sentinel demo --keep-running` to keep" in out  # the URLs above die with the demo
    # job leases are counted apart from the cluster's own leader leases: never more than tasks running
    progress = re.findall(r"(\d+) running, .*\| job leases held (\d+) \(\+(\d+) leader leases of the cluster\)", out)
    assert progress, out[-2000:]
    assert all(int(jobs) <= int(running) for running, jobs, _ in progress), progress
    assert any(int(leaders) >= 1 for _, _, leaders in progress), progress
    assert "every process it started has exited" in out
    assert _processes_mentioning("demo-build@") == []
    assert _processes_mentioning("demo-test@") == []
    assert _processes_mentioning("demo-deploy@") == []
