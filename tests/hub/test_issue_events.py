"""Issue events: who labeled, unlabeled, closed or reopened an issue, per issue and for the repository, with ETags."""

from __future__ import annotations

from .helpers import call


def test_label_and_state_events_are_listed_with_their_actor(github_hub):
    writer = github_hub.add_token(login="octo-writer", access="write")
    repo = github_hub.client(writer).get_repo(github_hub.repo)
    issue = repo.create_issue("events", labels=["bug"])
    issue.add_to_labels("sentinel:run-build")
    issue.remove_from_labels("bug")
    issue.edit(state="closed")
    issue.edit(state="open")

    mine = call(github_hub, "GET", f"/repos/{github_hub.repo}/issues/{issue.number}/events").json()
    assert [(e["event"], (e.get("label") or {}).get("name")) for e in mine] == [
        ("labeled", "bug"), ("labeled", "sentinel:run-build"), ("unlabeled", "bug"), ("closed", None),
        ("reopened", None)]
    assert {e["actor"]["login"] for e in mine} == {"octo-writer"}
    assert all("issue" not in e for e in mine)

    first = call(github_hub, "GET", f"/repos/{github_hub.repo}/issues/events", params={"per_page": 2})
    assert [e["event"] for e in first.json()] == ["reopened", "closed"]  # newest first
    assert first.json()[0]["issue"]["number"] == issue.number and 'rel="next"' in first.headers["Link"]
    again = call(github_hub, "GET", f"/repos/{github_hub.repo}/issues/events", params={"per_page": 2},
                 headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304

    # PyGithub reads them as IssueEvent objects
    events = list(github_hub.client().get_repo(github_hub.repo).get_issue(issue.number).get_events())
    assert events[1].event == "labeled" and events[1].label.name == "sentinel:run-build"
    assert events[1].actor.login == "octo-writer"
