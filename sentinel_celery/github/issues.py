"""Issues and comments that Sentinel owns, found again by label and hidden marker, never duplicated.

Every issue or comment Sentinel creates carries a marker (``<!-- sentinel:worker:w1 -->``) and
its numbers are cached in ``github:objects`` (see state.py). A create whose answer was lost (5xx
after the change was applied, a timeout) leaves a ``creating`` note on the object; before trying
again, and whenever the cache is cold, the mirror looks in GitHub for the marker first. That is
what makes restarts and retries idempotent.

Owns no Redis keys of its own (writes object entries through :class:`MirrorState`).
"""
from __future__ import annotations

import logging
import time

from sentinel_celery.github import render
from sentinel_celery.github.client import GitHubClient, NotFound
from sentinel_celery.github.state import MirrorState

logger = logging.getLogger(__name__)


class IssueOps:
    def __init__(self, client: GitHubClient, state: MirrorState):
        self.client = client
        self.state = state
        self._found: dict[str, dict[str, dict]] = {}  # label -> marker -> issue (this leadership term)

    def reset(self) -> None:
        self._found.clear()

    # -- finding -----------------------------------------------------------------------------
    def find_by_marker(self, label: str, marker: str, *, refresh: bool = False) -> dict | None:
        """The issue labelled ``label`` whose body holds ``marker`` (listing once per term)."""
        if refresh or label not in self._found:
            found: dict[str, dict] = {}
            for issue in self.client.paged("issues", {"labels": label, "state": "all", "sort": "created",
                                                      "direction": "asc"}):
                for kind, key in render.find_markers(issue.get("body")):
                    found.setdefault(render.marker(kind, key), issue)  # oldest wins, if ever duplicated
            self._found[label] = found
        return self._found[label].get(marker)

    def find_comment(self, number: int, marker: str) -> dict | None:
        for comment in self.client.paged(f"issues/{number}/comments"):
            if marker in (comment.get("body") or ""):
                return comment
        return None

    # -- issues ------------------------------------------------------------------------------
    def ensure_issue(self, obj_id: str, obj: dict, *, label: str, marker: str, title: str, body: str,
                     labels: list[str], cold: bool) -> tuple[dict, bool]:
        """The object's issue: cached, found by marker, or created. Returns (issue fields, created)."""
        if obj.get("number"):
            return obj, False
        if cold or obj.get("creating"):
            issue = self.find_by_marker(label, marker, refresh=bool(obj.get("creating")))
            if issue is not None:
                obj.update(number=issue["number"], open=issue["state"] == "open", creating=None,
                           labels=[lbl["name"] for lbl in issue.get("labels", [])])
                self.state.put_object(obj_id, obj)
                return obj, False
        obj["creating"] = int(time.time())
        self.state.put_object(obj_id, obj)
        resp = self.client.request("POST", "issues", body={"title": title, "body": body, "labels": labels})
        issue = resp.data
        obj.update(number=issue["number"], open=True, creating=None, digest=render.digest(body),
                   labels=[lbl["name"] for lbl in issue.get("labels", [])])
        self.state.put_object(obj_id, obj)
        self._found.setdefault(label, {})[marker] = issue
        return obj, True

    def edit_issue(self, number: int, **fields) -> dict:
        return self.client.request("PATCH", f"issues/{number}", body=fields).data

    # -- comments ----------------------------------------------------------------------------
    def upsert_comment(self, obj_id: str, obj: dict, number: int, marker: str, body: str, *,
                       cold: bool) -> bool:
        """One comment per object, edited in place; False if its content was already there."""
        d = render.digest(body)
        if obj.get("comment_id") and obj.get("comment_digest") == d:
            return False
        if obj.get("comment_id"):
            try:
                self.client.request("PATCH", f"issues/comments/{obj['comment_id']}", body={"body": body})
                obj.update(comment_digest=d)
                self.state.put_object(obj_id, obj)
                return True
            except NotFound:  # someone deleted it: write a new one
                obj.pop("comment_id", None)
        if cold or obj.get("comment_creating"):
            found = self.find_comment(number, marker)
            if found is not None:
                obj.update(comment_id=found["id"], comment_creating=None)
                if found.get("body") != body:
                    self.client.request("PATCH", f"issues/comments/{found['id']}", body={"body": body})
                obj.update(comment_digest=d)
                self.state.put_object(obj_id, obj)
                return True
        obj["comment_creating"] = int(time.time())
        self.state.put_object(obj_id, obj)
        resp = self.client.request("POST", f"issues/{number}/comments", body={"body": body})
        obj.update(comment_id=resp.data["id"], comment_digest=d, comment_creating=None)
        self.state.put_object(obj_id, obj)
        return True

    def comment_once(self, obj_id: str, obj: dict, number: int, marker: str, body: str) -> bool:
        """A one-off comment (worker stopped, declared dead, back): written at most once per marker."""
        done = obj.setdefault("comments", [])
        if marker in done:
            return False
        pending = obj.get("comment_pending")
        if pending == marker and self.find_comment(number, marker) is not None:
            created = False  # the earlier attempt did reach GitHub
        else:
            obj["comment_pending"] = marker
            self.state.put_object(obj_id, obj)
            self.client.request("POST", f"issues/{number}/comments", body={"body": body})
            created = True
        done.append(marker)
        obj["comments"] = done[-20:]
        obj["comment_pending"] = None
        self.state.put_object(obj_id, obj)
        return created
