"""Flower: `sentinel flower` serves a Sentinel page behind Flower's own auth; `celery flower` works unchanged."""
import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

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


CHROMIUM = "/usr/bin/chromium"


def section(page: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}".*?</table>', page, re.S)
    assert match, f"no table {table_id}"
    return match.group(0)


def assert_flower_tab(page: str, token: int) -> None:
    """The page is a Flower page (its base template, CSS, scripts and navbar) with the Sentinel tab active."""
    for marker in ('<nav class="app-navbar navbar', "/static/css/flower.css", "/static/css/bootstrap.min.css",
                   "/static/js/flower.js", 'id="url_prefix"', 'class="page-eyebrow">Task Sentinel',
                   'class="metric-card', "var autorefresh = 1;", "setInterval("):
        assert marker in page, marker
    assert re.search(r'<a class="nav-link active"\s+href="/sentinel"\s+aria-current="page">Sentinel</a>', page)
    for tab in ("/workers", "/tasks", "/broker"):  # Flower's own tabs are still there
        assert f'href="{tab}"' in page, tab
    workers = section(page, "sentinel-workers")
    for text in ('<a href="/worker/fw%40', '<span class="badge bg-success">online</span>', "<td>0/1</td>",
                 "Incarnation", "Region", "Last heartbeat"):
        assert text in workers, text
    jobs, leaders = section(page, "sentinel-leases"), section(page, "sentinel-leader-leases")
    assert "deploy:prod" in jobs and f">{token}</span>" in jobs and "sentinel:" not in jobs
    assert "sentinel:failover-monitor" in leaders and "deploy:prod" not in leaders
    for table_id in ("sentinel-queues", "sentinel-alerts", "sentinel-failovers", "sentinel-github"):
        section(page, table_id)


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
        assert_flower_tab(page, lease.token)
        # every Flower page carries the tab in Flower's own navbar
        workers_page = get(f"{base}/workers", auth=auth)[1]
        assert re.search(r'<a class="nav-link"\s+href="/sentinel"\s*>Sentinel</a>', workers_page), workers_page[:3000]
        data = json.loads(get(f"{base}/sentinel/api", auth=auth)[1])
        assert "fw" in {w["id"] for w in data["workers"]}
        assert "deploy:prod" in {h["name"] for h in data["leases"]}
        # what the page's auto-refresh fetches: the tables alone, fresh
        lease.release()
        status, partial = get(f"{base}/sentinel?partial=1", auth=auth)
        assert status == 200 and "<html" not in partial and 'id="sentinel-workers"' in partial
        assert "deploy:prod" not in partial and "No job leases held." in partial
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


def test_sentinel_tab_in_a_real_browser(workers, sentinel_env, tmp_path):
    """Headless Chromium loads the tab, runs Flower's scripts and ours: the tables refresh themselves."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium): the browser check needs it")
    workers.start("fw", queues=["build"], concurrency=1)
    lease = try_acquire("deploy:prod", 60, worker="fw", task_id="3b1f0c2e-demo")
    port = free_port()
    flower = start([sys.executable, "-m", "sentinel_celery.cli", "flower", "--port", str(port)], tmp_path / "f.log")
    url = f"http://127.0.0.1:{port}/sentinel"
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'chromium'}"]
    try:
        wait_for(lambda: get(url)[0] == 200, 60, 0.3, "flower to answer")
        shot = tmp_path / "flower-tab.png"
        run = subprocess.run([*browser, "--window-size=1400,1300", f"--screenshot={shot}", url],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1400
        if os.environ.get("SENTINEL_SCREENSHOT_TO"):  # how docs/flower-tab.png is made
            with open(os.environ["SENTINEL_SCREENSHOT_TO"], "wb") as f:
                f.write(png)
        # the DOM after the scripts ran for 4 s of (virtual) time: Flower's page, refreshed by the tab's script
        dom = subprocess.run([*browser, "--dump-dom", "--virtual-time-budget=4000", f"{url}?autorefresh=1"],
                             capture_output=True, text=True, timeout=120).stdout
        assert_flower_tab(dom, lease.token)
        assert re.search(r'id="sentinel-refresh-status">Updated ', dom), re.findall(r"refresh-status.{0,80}", dom)
    finally:
        lease.release()
        stop(flower)
