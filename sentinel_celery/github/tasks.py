"""Linked tasks: issue labels and one status comment per issue; commit statuses or check runs per sha.

A task is *linked* when its kwargs carry ``github_issue=N`` and/or ``sha=...`` (the built-in jobs
take both). Its events (``task`` kind, keyed by task id: queued from the client, started, retry,
success, failure, revoked from the result backend, lease held/released from the task) are merged
per task, then grouped per GitHub object:

* issue N: labels ``sentinel:queued`` → ``sentinel:running`` → ``sentinel:done`` / ``sentinel:failed``
  (plus ``sentinel:locked`` while a task holds a lease), the assignee from ``github.assignees``
  (worker → login), and ONE comment edited in place: the latest task in detail (worker, queue,
  state, attempts, duration, output tail or error, failover history) and the last 10 tasks;
* commit ``sha``: one status per task type (context ``sentinel/<type>``): pending → success /
  failure / error — or a check run when the credentials are a GitHub App's (``checkRuns``).

Coalescing: whatever happened to an issue's tasks between two flushes costs at most one label
change (a conditional GET + one PATCH; the first one on an issue is a single POST that adds the
labels) and one comment edit; a commit at most one status.

Owns no Redis keys (object entries ``issue:<n>`` and ``commit:<sha>:<type>`` in
``github:objects``, merged task states in ``github:tasks``; see state.py).
"""
from __future__ import annotations

import logging

from sentinel_celery.github import render
from sentinel_celery.github.client import Rejected, uses_app
from sentinel_celery.github.state import TASK_FINAL, Pending, merge_task
from sentinel_celery.github.work import FINAL, UPDATE, Context, Work

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, LOCKED = ("sentinel:queued", "sentinel:running", "sentinel:done",
                                         "sentinel:failed", "sentinel:locked")
TASK_LABELS = (QUEUED, RUNNING, DONE, FAILED, LOCKED)
HISTORY = 10
STATE_LABEL = {"QUEUED": QUEUED, "PENDING": QUEUED, "RECEIVED": QUEUED, "RETRY": QUEUED, "STARTED": RUNNING,
               "SUCCESS": DONE, "FAILURE": FAILED, "REVOKED": FAILED}
STATUS_STATE = {"QUEUED": "pending", "PENDING": "pending", "RECEIVED": "pending", "RETRY": "pending",
                "STARTED": "pending", "SUCCESS": "success", "FAILURE": "failure", "REVOKED": "error"}
ICON = {"SUCCESS": "✅", "FAILURE": "❌", "REVOKED": "⛔", "STARTED": "⏳", "RETRY": "🔁", "QUEUED": "🕓"}


def issue_number(state: dict) -> int | None:
    try:
        n = int(state.get("github_issue"))
        return n if n > 0 else None
    except (TypeError, ValueError):
        return None


def plan(ctx: Context, pending: list[Pending]) -> list[Work]:
    entries = [p for p in pending if p.kind == "task"]
    if not entries:
        return []
    known = ctx.state.tasks(p.key for p in entries)
    merged = {p.key: merge_task(known.get(p.key, {}), p.state) for p in entries}
    by_entry = {p.key: p for p in entries}
    issues: dict[int, list[str]] = {}
    commits: dict[tuple[str, str], list[str]] = {}
    unlinked = []
    for tid, st in merged.items():
        n, sha = issue_number(st), render.sha(st.get("sha"), full=True)  # statuses need a full sha
        if n and ctx.mirror_opt("linkedTasks"):
            issues.setdefault(n, []).append(tid)
        if sha and ctx.mirror_opt("commitStatuses"):
            commits.setdefault((str(sha), str(st.get("task_type") or "task")), []).append(tid)
        if not ((n and ctx.mirror_opt("linkedTasks")) or (sha and ctx.mirror_opt("commitStatuses"))):
            unlinked.append(by_entry[tid])
    works = [Work(UPDATE, "tasks without a GitHub object", None, unlinked)] if unlinked else []
    for n, tids in sorted(issues.items()):
        final = any(merged[t].get("state") in TASK_FINAL for t in tids)
        works.append(Work(FINAL if final else UPDATE, f"issue #{n} ({len(tids)} task(s))",
                          _sync_issue(ctx, n, {t: merged[t] for t in tids}), [by_entry[t] for t in tids]))
    for (sha, ttype), tids in sorted(commits.items()):
        latest = max(tids, key=lambda t: (by_entry[t].last, t))
        final = merged[latest].get("state") in TASK_FINAL
        works.append(Work(FINAL if final else UPDATE, f"commit {sha[:10]} sentinel/{ttype}",
                          _sync_commit(ctx, sha, ttype, latest, merged[latest]), [by_entry[t] for t in tids]))
    for w in works:  # remember merged states once an object's writes succeeded
        w.on_success = lambda tids=[p.key for p in w.covers]: ctx.state.put_tasks(
            {t: merged[t] for t in tids if t in merged})
    return works


# -- issues ------------------------------------------------------------------------------------
def summary(tid: str, st: dict) -> dict:
    return {"id": tid, "task": st.get("task"), "type": st.get("task_type"), "state": st.get("state"),
            "worker": st.get("worker"), "attempts": st.get("attempts"), "duration": st.get("duration"),
            "at": st.get("at"), "failovers": len(st.get("failovers") or []),
            "first": st.get("queued_at") or st.get("started_at") or st.get("at")}


def latest_runs(history: list[dict]) -> list[dict]:
    """The tasks an issue's status stands for: every linked task, except a finished run of a task
    that was run again (the same task name, queued after it had finished). Tasks that overlapped
    in time are siblings (a build and a test, two builds in parallel): each counts."""
    def superseded(h: dict) -> bool:
        if h.get("state") not in TASK_FINAL or not h.get("at"):
            return False
        return any(o is not h and o.get("task") and o.get("task") == h.get("task")
                   and int(o.get("first") or 0) > int(h["at"]) for o in history)
    return [h for h in history if not superseded(h)]


def _bucket(state: str | None) -> str:
    if state in ("FAILURE", "REVOKED", "STARTED", "SUCCESS"):
        return "FAILURE" if state == "REVOKED" else state
    return "QUEUED"


def overall_state(history: list[dict]) -> str:
    """The issue's state, as GitHub combines commit statuses: FAILURE if the latest run of any
    linked task failed (or was revoked), else STARTED while any runs, else QUEUED while any waits,
    else SUCCESS: done only when every one succeeded."""
    buckets = {_bucket(h.get("state")) for h in latest_runs(history)}
    for state in ("FAILURE", "STARTED", "QUEUED", "SUCCESS"):
        if state in buckets:
            return state
    return "QUEUED"


def desired_labels(history: list[dict], details: dict[str, dict]) -> list[str]:
    out = [STATE_LABEL.get(overall_state(history), QUEUED)]
    if any(h.get("state") == "STARTED" and (details.get(h["id"]) or {}).get("locked") for h in history):
        out.append(LOCKED)
    return out


def headline(history: list[dict]) -> str:
    """One line over every linked task: ``❌ Sentinel: 1 of 2 linked tasks failed``."""
    runs = latest_runs(history)
    state, total = overall_state(history), len(runs)
    if state == "SUCCESS":
        text = "the linked task succeeded" if total == 1 else f"all {total} linked tasks succeeded"
    else:
        count = sum(1 for h in runs if _bucket(h.get("state")) == state)
        word = {"FAILURE": "failed", "STARTED": "running", "QUEUED": "waiting"}[state]
        text = f"{count} of {total} linked task{'s' if total != 1 else ''} {word}"
    return f"{ICON.get(state, '')} Sentinel: {text}"


def _commit_cell(value) -> str:
    if not value:
        return "-"
    return render.sha(value) or "not a commit sha"


def comment_body(n: int, history: list[dict], current: dict, current_id: str) -> str:
    st = current
    state = st.get("state") or "QUEUED"
    lines = [render.marker("issue", n), f"### {headline(history)}", "",
             f"**Latest:** {ICON.get(state, '')} {render.text(st.get('task_type') or 'task')} task "
             f"`{render.cell(current_id, 60)}` — {render.text(state.lower())}", ""]
    lease = st.get("locked")
    rows = [["task", st.get("task")], ["state", state], ["worker", st.get("worker") or "-"],
            ["queue", st.get("queue") or "-"], ["attempts", st.get("attempts") or 1],
            ["duration", render.duration(st.get("duration"))],
            ["lease", f"{lease} (token {st.get('lease_token')})" if lease else "-"],
            ["commit", _commit_cell(st.get("sha"))], ["updated", render.when(st.get("at"))]]
    if st.get("exit_code") is not None:
        rows.insert(6, ["exit code", st.get("exit_code")])
    lines += [render.table(["", ""], rows), ""]
    if st.get("error"):
        lines += [f"**Error** ({render.text(st.get('error_type') or 'exception', 80)})", "",
                  render.code(st["error"], 2500), ""]
    elif st.get("output_tail"):
        lines += ["**Output** (last lines)", "", render.code(st["output_tail"], 2500), ""]
    if st.get("failovers"):
        lines += ["**Failover history**", ""]
        for f in st["failovers"]:
            to = f" → re-run on `{render.cell(f['to'], 60)}`" if f.get("to") else " → given back to its queue"
            lines.append(f"- {render.when(f.get('at'))}: worker `{render.cell(f.get('worker'), 60)}` was lost{to}")
        lines.append("")
    if len(history) > 1:
        lines += [f"**Recent tasks on this issue** (last {HISTORY})", "",
                  render.table(["task", "type", "state", "worker", "attempts", "duration", "updated"],
                               [[h["id"][:12], h.get("type"), h.get("state"), h.get("worker") or "-",
                                 h.get("attempts") or 1, render.duration(h.get("duration")), render.when(h.get("at"))]
                                for h in history]), ""]
    lines.append("_Kept up to date by Sentinel; this comment is edited in place._")
    return render.bound_body("\n".join(lines))


def _assignee(ctx: Context, current: dict) -> str | None:
    mapping = ctx.cfg.get("github.assignees") or {}
    worker = current.get("worker")
    return mapping.get(worker) if worker else None


def _sync_issue(ctx: Context, n: int, tasks: dict[str, dict]):
    def run() -> None:
        obj_id = f"issue:{n}"
        obj = ctx.state.object(obj_id) or {}
        history = {h["id"]: h for h in obj.get("history") or []}
        details = dict(obj.get("details") or {})
        for tid, st in tasks.items():
            first = (history.get(tid) or {}).get("first")  # kept from the first flush that saw the task
            history[tid] = summary(tid, st)
            if first:
                history[tid]["first"] = min(int(first), int(history[tid]["first"] or first))
            details[tid] = {"locked": st.get("locked") if st.get("state") == "STARTED" else None}
        ordered = sorted(history.values(), key=lambda h: (int(h.get("at") or 0), h["id"]), reverse=True)[:HISTORY]
        details = {h["id"]: details.get(h["id"], {}) for h in ordered}
        current_id = ordered[0]["id"]
        current = tasks.get(current_id) or ctx.state.tasks([current_id]).get(current_id) or {}
        # the comment first: whoever sees the new label finds the comment already telling the story
        body = comment_body(n, ordered, current, current_id)
        ctx.ops.upsert_comment(obj_id, obj, n, render.marker("issue", n), body, cold=ctx.cold and not obj.get("seen"))
        obj.update(seen=True)
        want = desired_labels(ordered, details)
        login = _assignee(ctx, current)
        if want != obj.get("labels_set") or (login and login not in (obj.get("assignees") or [])):
            _set_labels(ctx, n, obj, want, login)
        obj.update(history=ordered, details=details)
        ctx.state.put_object(obj_id, obj)
    return run


def _set_labels(ctx: Context, n: int, obj: dict, want: list[str], login: str | None) -> None:
    if "labels_all" not in obj and not login:
        # First touch: adding needs no read (GitHub answers with all the issue's labels), and only
        # an earlier run's leftovers (our cache was lost) still need the read-and-replace below.
        added = ctx.client.request("POST", f"issues/{n}/labels", body={"labels": want}).data or []
        current = [lbl["name"] for lbl in added]
        if not any(x in TASK_LABELS and x not in want for x in current):
            obj.update(labels_set=want, labels_all=current, assignees=obj.get("assignees") or [])
            return
    # Read only once the write may go at once: a label someone adds between our read and our
    # replace would be lost, so keep that window one round trip, not a write-pacing wait.
    ctx.client.wait_turn(True, f"issues/{n}")
    resp = ctx.client.request("GET", f"issues/{n}", etag=obj.get("etag"))
    if resp.status == 304:
        current, assignees = list(obj.get("labels_all") or []), list(obj.get("assignees") or [])
    else:
        current = [lbl["name"] for lbl in resp.data.get("labels", [])]
        assignees = [a["login"] for a in resp.data.get("assignees") or []]
        obj["etag"] = resp.etag
    labels = [x for x in current if x not in TASK_LABELS] + want
    fields: dict = {}
    if sorted(labels) != sorted(current):
        fields["labels"] = labels
    if login and login not in assignees:
        fields["assignees"] = assignees + [login]
    if fields:
        try:
            data = ctx.ops.edit_issue(n, **fields)
        except Rejected:
            if "assignees" not in fields:
                raise
            logger.warning("sentinel: GitHub refused assignee %r for issue #%s (no push access?)", login, n)
            fields.pop("assignees")
            data = ctx.ops.edit_issue(n, **fields) if fields else resp.data
        labels = [lbl["name"] for lbl in (data or {}).get("labels", [])] or labels
        assignees = [a["login"] for a in (data or {}).get("assignees") or []] or assignees
        obj["etag"] = None  # we changed it: the next GET is a full one
    obj.update(labels_set=want, labels_all=labels, assignees=assignees)


# -- commits -----------------------------------------------------------------------------------
def _description(st: dict) -> str:
    state, worker = st.get("state"), st.get("worker")
    where = f" on {worker}" if worker else ""
    if state == "SUCCESS":
        return f"succeeded{where} in {render.duration(st.get('duration'))}"
    if state == "FAILURE":
        return f"failed{where}: {st.get('error') or 'error'}"
    if state == "REVOKED":
        return "revoked"
    if state == "STARTED":
        return f"running{where}"
    if state == "RETRY":
        return f"retrying (attempt {st.get('attempts') or '?'})"
    return "queued"


def _use_checks(ctx: Context) -> bool:
    mode = ctx.mirror_opt("checkRuns")
    return mode == "always" or (mode == "auto" and uses_app(ctx.cfg))


def _sync_commit(ctx: Context, sha: str, ttype: str, tid: str, st: dict):
    def run() -> None:
        obj_id = f"commit:{sha}:{ttype}"
        obj = ctx.state.object(obj_id) or {}
        state = STATUS_STATE.get(st.get("state"), "pending")
        desc = render.plain(_description(st), 140)
        if obj.get("state") == state:
            return  # statuses cannot be edited, only added: post state changes, not every re-run's details
        context = f"sentinel/{ttype}"
        if _use_checks(ctx):
            _check_run(ctx, sha, context, tid, st, obj, desc)
        else:
            ctx.client.request("POST", f"statuses/{sha}", body={"state": state, "context": context,
                                                                "description": desc})
        obj.update(state=state, description=desc, task=tid, at=ctx.now)
        ctx.state.put_object(obj_id, obj)
    return run


def _check_run(ctx: Context, sha: str, name: str, tid: str, st: dict, obj: dict, desc: str) -> None:
    state = st.get("state")
    fields: dict = {"name": name, "external_id": tid,
                    "output": {"title": desc, "summary": render.text(desc, 1000)}}
    if state in TASK_FINAL:
        fields["conclusion"] = {"SUCCESS": "success", "FAILURE": "failure"}.get(state, "cancelled")
    else:
        fields["status"] = "in_progress" if state == "STARTED" else "queued"
    if obj.get("check_run_id") and obj.get("task") == tid:
        ctx.client.request("PATCH", f"check-runs/{obj['check_run_id']}", body=fields)
    else:
        resp = ctx.client.request("POST", "check-runs", body={**fields, "head_sha": sha})
        obj["check_run_id"] = resp.data["id"]
