"""Bodies parse in a client generated from GitHub's OpenAPI description.

githubkit's models are generated from GitHub's published OpenAPI description
and validated with pydantic, so a missing required field or a wrong type in
any hub response fails here.
"""

from __future__ import annotations

import base64

import pytest

githubkit = pytest.importorskip("githubkit", reason="githubkit (test extra) validates bodies against GitHub's OpenAPI")


@pytest.fixture
def kit(github_hub):
    return githubkit.GitHub(githubkit.TokenAuthStrategy(github_hub.token), base_url=github_hub.base_url + "/")


def test_repository_user_rate_limit(kit):
    assert kit.rest.repos.get("acme", "app").parsed_data.full_name == "acme/app"
    assert kit.rest.users.get_authenticated().parsed_data.login == "acme"
    assert kit.rest.users.get_by_username("acme").parsed_data.login == "acme"
    assert kit.rest.rate_limit.get().parsed_data.resources.core.limit == 5000
    assert kit.rest.repos.list_collaborators("acme", "app").parsed_data[0].permissions.admin is True
    assert kit.rest.repos.get_collaborator_permission_level("acme", "app", "acme").parsed_data.permission == "admin"
    assert [u.login for u in kit.rest.issues.list_assignees("acme", "app").parsed_data] == ["acme"]
    assert kit.rest.repos.get_branch("acme", "app", "main").parsed_data.name == "main"
    assert [b.name for b in kit.rest.repos.list_branches("acme", "app").parsed_data] == ["main"]


def test_issues_comments_labels_assignees(kit):
    issue = kit.rest.issues.create("acme", "app", data={"title": "t", "body": "b", "labels": ["bug"]}).parsed_data
    assert kit.rest.issues.update("acme", "app", issue.number, data={"state": "closed"}).parsed_data.state == "closed"
    assert len(kit.rest.issues.list_for_repo("acme", "app", state="all").parsed_data) == 1
    comment = kit.rest.issues.create_comment("acme", "app", issue.number, data={"body": "hi"}).parsed_data
    assert kit.rest.issues.get_comment("acme", "app", comment.id).parsed_data.body == "hi"
    assert kit.rest.issues.update_comment("acme", "app", comment.id, data={"body": "b2"}).parsed_data.body == "b2"
    assert [c.body for c in kit.rest.issues.list_comments("acme", "app", issue.number).parsed_data] == ["b2"]
    assert kit.rest.issues.create_label("acme", "app", data={"name": "n", "color": "ffffff"}).parsed_data.name == "n"
    assert kit.rest.issues.update_label("acme", "app", "n", data={"new_name": "m"}).parsed_data.name == "m"
    assert len(kit.rest.issues.list_labels_for_repo("acme", "app").parsed_data) == 10
    assert [
        x.name for x in kit.rest.issues.set_labels("acme", "app", issue.number, data={"labels": ["m"]}).parsed_data
    ] == ["m"]
    assert len(kit.rest.issues.add_labels("acme", "app", issue.number, data={"labels": ["bug"]}).parsed_data) == 2
    assert [x.name for x in kit.rest.issues.remove_label("acme", "app", issue.number, "m").parsed_data] == ["bug"]
    added = kit.rest.issues.add_assignees("acme", "app", issue.number, data={"assignees": ["acme"]}).parsed_data
    assert [a.login for a in added.assignees] == ["acme"]


def test_contents_git_statuses(kit):
    content = base64.b64encode(b"x").decode()
    put = kit.rest.repos.create_or_update_file_contents(
        "acme", "app", "a.txt", data={"message": "m", "content": content}
    )
    assert put.status_code == 201
    file_sha = kit.rest.repos.get_content("acme", "app", "a.txt").parsed_data.sha
    assert put.parsed_data.content.sha == file_sha
    assert (
        kit.rest.repos.delete_file("acme", "app", "a.txt", data={"message": "rm", "sha": file_sha}).parsed_data.content
        is None
    )
    sha = kit.rest.git.get_ref("acme", "app", "heads/main").parsed_data.object_.sha
    tree = kit.rest.git.get_commit("acme", "app", sha).parsed_data.tree.sha
    assert kit.rest.git.get_tree("acme", "app", tree).parsed_data.tree[0].path == "README.md"
    new_tree = kit.rest.git.create_tree(
        "acme",
        "app",
        data={"base_tree": tree, "tree": [{"path": "z", "mode": "100644", "type": "blob", "content": "z"}]},
    ).parsed_data.sha
    commit = kit.rest.git.create_commit(
        "acme", "app", data={"message": "m", "tree": new_tree, "parents": [sha]}
    ).parsed_data
    assert (
        kit.rest.git.create_ref("acme", "app", data={"ref": "refs/heads/x", "sha": sha}).parsed_data.ref
        == "refs/heads/x"
    )
    assert (
        kit.rest.git.update_ref("acme", "app", "heads/x", data={"sha": commit.sha}).parsed_data.object_.sha
        == commit.sha
    )
    assert len(kit.rest.git.list_matching_refs("acme", "app", "heads").parsed_data) == 2
    assert kit.rest.git.create_blob("acme", "app", data={"content": "hi"}).parsed_data.sha
    kit.rest.repos.create_commit_status("acme", "app", sha, data={"state": "success", "context": "c"})
    assert kit.rest.repos.get_combined_status_for_ref("acme", "app", sha).parsed_data.state == "success"
    assert kit.rest.repos.list_commit_statuses_for_ref("acme", "app", sha).parsed_data[0].context == "c"
    assert kit.rest.repos.get_commit("acme", "app", sha).parsed_data.sha == sha
    assert [c.commit.message for c in kit.rest.repos.list_commits("acme", "app", sha="x").parsed_data] == [
        "m",
        "rm",
        "m",
        "Initial commit",
    ]


def test_check_runs(github_hub):
    app_token = github_hub.add_token(kind="app")
    kit = githubkit.GitHub(githubkit.TokenAuthStrategy(app_token), base_url=github_hub.base_url + "/")
    sha = kit.rest.git.get_ref("acme", "app", "heads/main").parsed_data.object_.sha
    run = kit.rest.checks.create("acme", "app", data={"name": "n", "head_sha": sha}).parsed_data
    assert run.status == "queued"
    assert (
        kit.rest.checks.update("acme", "app", run.id, data={"conclusion": "success"}).parsed_data.status == "completed"
    )
    assert kit.rest.checks.get("acme", "app", run.id).parsed_data.conclusion == "success"
    assert kit.rest.checks.list_for_ref("acme", "app", sha).parsed_data.total_count == 1
