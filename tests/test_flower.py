"""Flower: `sentinel flower` serves a Sentinel page behind Flower's own auth; `celery flower` works unchanged."""
import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.ops.embedded import free_port
from sentinel_celery.state.leases import try_acquire


def get(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None, ""


def start(argv, log_path):
    log = open(log_path, "wb")
    return subprocess.Popen(argv, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_sentinel_page_behind_basic_auth_and_plain_flower_unchanged(workers, sentinel_env, tmp_path):
    workers.start("fw", queues=["build"], concurrency=1)
    lease = try_acquire("deploy:prod", 60, worker="fw")
    port, plain_port = free_port(), free_port()
    ours = start([sys.executable, "-m", "sentinel_celery.cli", "flower", "--port", str(port),
                  "--basic-auth", "ops:s3cret"], tmp_path / "sentinel-flower.log")
    plain = start([sys.executable, "-m", "celery", "-A", "sentinel_celery", "flower", f"--port={plain_port}",
                   "--address=127.0.0.1"], tmp_path / "celery-flower.log")
    base, auth = f"http://127.0.0.1:{port}", "ops:s3cret"
    try:
        def up(url, **kw):
            if ours.poll() is not None or plain.poll() is not None:
                raise RuntimeError("flower exited:\n" + (tmp_path / "sentinel-flower.log").read_text()[-2000:]
                                   + (tmp_path / "celery-flower.log").read_text()[-2000:])
            return get(url, **kw)[0] is not None
        wait_for(lambda: up(f"{base}/sentinel", auth=auth) and up(f"http://127.0.0.1:{plain_port}/"), 60, 0.3,
                 "both flowers to answer")

        assert get(f"{base}/sentinel")[0] == 401
        assert get(f"{base}/sentinel", auth="ops:wrong")[0] == 401
        assert get(f"{base}/sentinel/api")[0] == 401
        status, page = get(f"{base}/sentinel", auth=auth)
        assert status == 200
        for text in ("Task Sentinel", "fw", "online", "deploy:prod", f"<td>{lease.token}</td>", "Held leases",
                     "Failover history", "GitHub mirror", "Alerts firing"):
            assert text in page, text
        data = json.loads(get(f"{base}/sentinel/api", auth=auth)[1])
        assert "fw" in {w["id"] for w in data["workers"]}
        assert "deploy:prod" in {h["name"] for h in data["leases"]}
        # Flower's own pages are there, behind the same auth
        assert get(f"{base}/workers")[0] == 401
        assert get(f"{base}/workers", auth=auth)[0] == 200

        # Plain `celery flower`: no Sentinel page, and it sees Sentinel's worker through Celery's events
        assert get(f"http://127.0.0.1:{plain_port}/sentinel")[0] == 404

        def listed():
            status, body = get(f"http://127.0.0.1:{plain_port}/workers?json=1&refresh=1")
            return status == 200 and any(w.get("hostname", "").startswith("fw@") for w in json.loads(body)["data"])
        wait_for(listed, 45, 1.0, "plain Flower to list the Sentinel worker")
    finally:
        lease.release()
        stop(ours)
        stop(plain)
