"""``sentinel github test-connection | status | sync`` and ``sentinel mirror``.

Every failure is one clear line (bad token, missing permission, unknown repository, GitHub not
reachable), never a traceback, and never shows the token.

Owns no Redis keys.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import click

from sentinel_celery.cli.common import emit, fail, handles_errors, json_option, redact_url
from sentinel_celery.config import get_config
from sentinel_celery.github.client import (
    AuthFailed,
    Forbidden,
    GitHubClient,
    GitHubError,
    NotConfigured,
    NotFound,
    RateLimited,
    Unavailable,
    configured,
)
from sentinel_celery.github.mirror import Mirror, mirror_status, request_sync


@click.group("github", help="The GitHub mirror: connection check, status, sync now.")
def github_group() -> None:
    pass


def _missing(cfg) -> str:
    g = cfg.get("github")
    missing = [name for name, key in (("GITHUB_OWNER", "owner"), ("GITHUB_REPO", "repo")) if not g.get(key)]
    if not (g.get("token") or (g.get("appId") and g.get("privateKeyPath") and g.get("installationId"))):
        missing.append("GITHUB_TOKEN (or github.appId, github.privateKeyPath, github.installationId)")
    return ", ".join(missing)


def check_connection(cfg) -> tuple[bool, list[dict]]:
    """Token, repository, permissions and rate limit, as a list of checks (name, ok, detail)."""
    checks: list[dict] = []
    api = redact_url(cfg.get("github.apiUrl"))
    if not cfg.get("github.enabled"):
        return False, [{"check": "enabled", "ok": False, "detail": "github.enabled is false"}]
    if not configured(cfg):
        return False, [{"check": "configuration", "ok": False, "detail": f"not configured: set {_missing(cfg)}"}]
    try:
        client = GitHubClient(cfg)
    except NotConfigured as exc:
        return False, [{"check": "configuration", "ok": False, "detail": str(exc)}]
    except Exception as exc:
        return False, [{"check": "credentials", "ok": False,
                        "detail": f"cannot use the GitHub credentials: {type(exc).__name__}: {exc}"}]
    repo = f"{client.owner}/{client.repo}"
    try:
        data = client.get(client.repo_path).data or {}
        checks.append({"check": "token", "ok": True, "detail": f"accepted by {api}"})
        checks.append({"check": "repository", "ok": True, "detail": f"{repo} is reachable"})
    except AuthFailed:
        return False, [{"check": "token", "ok": False,
                        "detail": f"{api} rejected the credentials (401 Bad credentials): the token is wrong, "
                                  f"expired or revoked"}]
    except NotFound:
        return False, [{"check": "token", "ok": True, "detail": f"accepted by {api}"},
                       {"check": "repository", "ok": False,
                        "detail": f"{repo} not found, or this token cannot see it (check github.owner/github.repo "
                                  f"and the token's repository access)"}]
    except Unavailable as exc:
        return False, [{"check": "reachable", "ok": False, "detail": f"cannot reach {api}: {exc}"}]
    except RateLimited as exc:
        return False, [{"check": "rate limit", "ok": False, "detail": f"rate limited: {exc}"}]
    except GitHubError as exc:
        return False, [{"check": "repository", "ok": False, "detail": str(exc)}]
    perms = data.get("permissions")
    if isinstance(perms, dict):
        can_write = bool(perms.get("push") or perms.get("admin") or perms.get("maintain"))
        checks.append({"check": "permissions", "ok": can_write,
                       "detail": ("can write issues, labels and commit statuses" if can_write else
                                  "read-only: the mirror needs write access to issues and commit statuses "
                                  "(fine-grained token: Issues read/write, Commit statuses read/write; "
                                  "GitHub App: also Checks read/write)")})
    else:
        checks.append({"check": "permissions", "ok": True,
                       "detail": "not reported for this kind of token (GitHub App installation?); "
                                 "writes will tell"})
    try:
        who = client.get("/user").data or {}
        checks.append({"check": "identity", "ok": True, "detail": f"authenticated as {who.get('login')}"})
    except Forbidden:
        checks.append({"check": "identity", "ok": True, "detail": "GitHub App installation token"})
    except GitHubError:
        pass
    try:
        core = (client.get("/rate_limit").data or {}).get("resources", {}).get("core", {})
        reset_in = max(int(core.get("reset", 0) - time.time()), 0)
        ok = core.get("remaining", 0) > 0
        checks.append({"check": "rate limit", "ok": ok,
                       "detail": f"{core.get('remaining')} of {core.get('limit')} requests left, "
                                 f"resets in {reset_in // 60} min"})
    except GitHubError as exc:
        checks.append({"check": "rate limit", "ok": False, "detail": f"cannot read: {exc}"})
    return all(c["ok"] for c in checks), checks


@github_group.command("test-connection", help="Check the token, the repository, permissions and rate limit.")
@json_option
def test_connection(as_json):
    try:
        cfg = get_config()
    except Exception as exc:
        fail(f"configuration error: {exc}")
    ok, checks = check_connection(cfg)
    emit({"ok": ok, "checks": checks}, as_json,
         lambda d: "\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']:<12} {c['detail']}" for c in d["checks"]))
    sys.exit(0 if ok else 1)


def _fmt_time(ts) -> str:
    if not ts:
        return "-"
    return f"{time.strftime('%H:%M:%S', time.localtime(float(ts)))} ({max(time.time() - float(ts), 0):.0f}s ago)"


@github_group.command("status", help="Outbox depth, last flush, lag, requests used, rate limit left.")
@json_option
@handles_errors
def status(as_json):
    cfg = get_config()
    data = mirror_status(cfg)
    if data is None:
        emit({"configured": False}, as_json, lambda d: f"GitHub mirror: not configured (set {_missing(cfg)})")
        return

    def render(d):
        rows = [("leader", d["leader"] or "none"),
                ("outbox", f"{d['outbox_depth']} ({d['stream_depth']} events not folded, "
                           f"{d['pending_objects']} objects waiting)"),
                ("last flush", _fmt_time(d["last_flush"])),
                ("lag", f"{d['lag_seconds']}s now" + (f"; p50 {d['lag_p50_seconds']}s, p95 {d['lag_p95_seconds']}s"
                                                        if d["lag_p50_seconds"] is not None else "")),
                ("requests", f"{d['requests_total']} " + (
                    "(" + ", ".join(f"{k}: {v}" for k, v in sorted(d["requests"].items())) + ")"
                    if d["requests"] else "")),
                ("writes", f"{d['writes_last_minute']} last minute, {d['writes_last_hour']} last hour"),
                ("rate limit", f"{d['rate_limit_remaining']} of {d['rate_limit']} left" if d["rate_limit_remaining"]
                 is not None else "unknown (no request yet)"),
                ("blocked", f"until {_fmt_time(d['blocked_until'])}: {d['blocked_reason']}" if d["blocked_until"]
                 else "no"),
                ("totals", f"{d['written']} objects written, {d['folded']} events folded, {d['dropped']} dropped, "
                           f"{d['rejected']} refused by GitHub"),
                ("last error", d["last_error"] or "-")]
        return "\n".join(f"{k:<11} {v}" for k, v in rows)
    emit(data, as_json, render)


@github_group.command("sync", help="Flush the outbox and reconcile the issues Sentinel owns, now.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@json_option
@handles_errors
def sync(timeout, as_json):
    cfg = get_config()
    if not configured(cfg):
        fail(f"GitHub is not configured: set {_missing(cfg)}")
    mirror = Mirror(cfg)
    deadline = time.monotonic() + timeout
    results = []
    if mirror.lead():
        try:
            while time.monotonic() < deadline:
                res = mirror.flush(force=not results)
                results.append(res)
                if res["error"] and not res["done"]:
                    break
                if not res["deferred"] and mirror_status(cfg)["pending_objects"] == 0:
                    break
        finally:
            mirror.release()
        last = results[-1]
        data = {"by": "this process", "flushes": len(results), "written": sum(r["done"] for r in results),
                "error": last["error"], **{k: v for k, v in mirror_status(cfg).items()
                                           if k in ("outbox_depth", "rate_limit_remaining")}}
    else:
        before = float(mirror_status(cfg).get("last_flush") or 0)
        request_sync(cfg)
        while time.monotonic() < deadline and float(mirror_status(cfg).get("last_flush") or 0) <= before:
            time.sleep(0.2)
        st = mirror_status(cfg)
        data = {"by": f"the running mirror ({st['leader']})", "flushes": 1 if st["last_flush"] else 0,
                "error": st["last_error"], "outbox_depth": st["outbox_depth"],
                "rate_limit_remaining": st["rate_limit_remaining"]}
    emit(data, as_json, lambda d: f"synced by {d['by']}: outbox {d['outbox_depth']}, rate limit left "
                                  f"{d['rate_limit_remaining']}" + (f"; last error: {d['error']}" if d["error"] else ""))
    if data.get("error"):
        sys.exit(1)


@click.command("mirror", help="Run the GitHub mirror writer standalone (acts while it holds the mirror lease).")
@handles_errors
def mirror_command():
    cfg = get_config()
    logging.basicConfig(level=cfg.get("monitoring.logLevel"), format="%(asctime)s %(levelname)s %(message)s")
    ok, checks = check_connection(cfg)
    if not ok:
        failed = next(c for c in checks if not c["ok"])
        fail(f"GitHub mirror cannot start: {failed['check']}: {failed['detail']}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    mirror = Mirror(cfg, stop=stop)
    click.echo(f"sentinel mirror: {cfg.get('github.owner')}/{cfg.get('github.repo')} at "
               f"{redact_url(cfg.get('github.apiUrl'))}, flush every {mirror.flush_s:g}s")
    mirror.run()
