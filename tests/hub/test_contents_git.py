"""Contents compare-and-swap, git refs with the fast-forward rule, blobs/trees/commits, and racing writers."""

from __future__ import annotations

import base64
import subprocess
import threading

import pytest
from github import GithubException, InputGitTreeElement, UnknownObjectException

from .helpers import call


@pytest.fixture
def repo(github_hub):
    return github_hub.client().get_repo(github_hub.repo)


def race(workers: int, action):
    """Run ``action(i)`` in ``workers`` threads released together; return (results, errors)."""
    barrier = threading.Barrier(workers)
    results, errors = [], []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            value = action(i)
            with lock:
                results.append(value)
        except GithubException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return results, errors


def test_contents_get_create_update_delete(repo):
    readme = repo.get_contents("README.md")
    assert readme.decoded_content == b"# app\n"
    git_sha = subprocess.run(["git", "hash-object", "--stdin"], input=b"# app\n", capture_output=True, check=True)
    assert readme.sha == git_sha.stdout.decode().strip()  # real git blob shas

    created = repo.create_file("state/leases.json", "add leases", '{"lease": 1}')
    assert created["content"].path == "state/leases.json"
    assert repo.get_git_commit(created["commit"].sha).message == "add leases"
    first = repo.get_contents("state/leases.json")
    assert first.decoded_content == b'{"lease": 1}'

    updated = repo.update_file("state/leases.json", "bump", '{"lease": 2}', first.sha)
    assert updated["content"].sha != first.sha
    assert repo.get_contents("state/leases.json").decoded_content == b'{"lease": 2}'
    assert [c.name for c in repo.get_contents("state")] == ["leases.json"]
    assert sorted(c.path for c in repo.get_contents("")) == ["README.md", "state"]

    repo.delete_file("state/leases.json", "drop", updated["content"].sha)
    with pytest.raises(UnknownObjectException):
        repo.get_contents("state/leases.json")
    with pytest.raises(UnknownObjectException):
        repo.get_contents("state")  # empty directories vanish, as in git


def test_every_contents_write_is_a_commit_on_the_branch(repo):
    head = repo.get_branch("main").commit.sha
    result = repo.create_file("x.txt", "add x", "x")
    assert result["commit"].parents[0].sha == head
    assert repo.get_branch("main").commit.sha == result["commit"].sha
    assert [c.commit.message for c in repo.get_commits()][:2] == ["add x", "Initial commit"]


def test_stale_sha_is_409_and_missing_sha_is_422(github_hub, repo):
    first = repo.create_file("f.txt", "v1", "one")["content"].sha
    repo.update_file("f.txt", "v2", "two", first)
    with pytest.raises(GithubException) as stale:
        repo.update_file("f.txt", "v3", "three", first)
    assert stale.value.status == 409
    assert stale.value.data["message"] == f"f.txt does not match {first}"
    missing = call(github_hub, "PUT", "/repos/acme/app/contents/f.txt", json={"message": "m", "content": "eA=="})
    assert missing.status_code == 422
    assert '"sha" wasn\'t supplied' in missing.json()["message"]
    with pytest.raises(GithubException) as stale_delete:
        repo.delete_file("f.txt", "rm", first)
    assert stale_delete.value.status == 409
    assert repo.get_contents("f.txt").decoded_content == b"two"


def test_put_with_a_sha_for_a_missing_file_creates_it(github_hub, repo):
    stale = repo.create_file("old.txt", "v1", "one")["content"].sha
    content = base64.b64encode(b"new").decode()
    body = {"message": "m", "content": content, "sha": stale}
    created = call(github_hub, "PUT", "/repos/acme/app/contents/new.txt", json=body)
    assert created.status_code == 201
    assert created.json()["content"]["path"] == "new.txt"
    assert repo.get_contents("new.txt").decoded_content == b"new"


def test_object_media_type_gives_a_directory_as_an_object_with_entries(github_hub, repo):
    repo.create_file("docs/a.md", "add", "a")
    accept = {"Accept": "application/vnd.github.object"}
    listing = call(github_hub, "GET", "/repos/acme/app/contents/docs").json()
    directory = call(github_hub, "GET", "/repos/acme/app/contents/docs", headers=accept).json()
    assert isinstance(directory, dict)
    assert (directory["type"], directory["name"], directory["path"], directory["size"]) == ("dir", "docs", "docs", 0)
    assert directory["entries"] == listing and [e["path"] for e in listing] == ["docs/a.md"]
    assert directory["download_url"] is None and directory["_links"]["self"] == directory["url"]
    root = call(github_hub, "GET", "/repos/acme/app/contents", headers=accept).json()
    assert [e["name"] for e in root["entries"]] == ["README.md", "docs"]
    file = call(github_hub, "GET", "/repos/acme/app/contents/docs/a.md", headers=accept).json()
    assert file["type"] == "file" and base64.b64decode(file["content"]) == b"a"  # a file is an object anyway


def test_a_submodule_is_listed_as_file_before_2026_03_10(github_hub, repo):
    main = repo.get_branch("main").commit
    tree = repo.create_git_tree(
        [InputGitTreeElement("lib", "160000", "commit", sha="5" * 40)], base_tree=main.commit.tree
    )
    commit = repo.create_git_commit("add submodule", tree, [main.commit])
    repo.get_git_ref("heads/main").edit(commit.sha)
    old = call(github_hub, "GET", "/repos/acme/app/contents").json()
    new = call(github_hub, "GET", "/repos/acme/app/contents", headers={"X-GitHub-Api-Version": "2026-03-10"}).json()
    assert {e["name"]: e["type"] for e in old} == {"README.md": "file", "lib": "file"}
    assert {e["name"]: e["type"] for e in new} == {"README.md": "file", "lib": "submodule"}


def test_contents_on_another_branch_and_ref(repo):
    main = repo.get_branch("main").commit.sha
    repo.create_git_ref("refs/heads/feature", main)
    repo.create_file("only-on-feature.txt", "feature", "f", branch="feature")
    assert repo.get_contents("only-on-feature.txt", ref="feature").decoded_content == b"f"
    with pytest.raises(UnknownObjectException):
        repo.get_contents("only-on-feature.txt")
    assert repo.get_contents("README.md", ref=main).decoded_content == b"# app\n"


def test_racing_contents_writers_exactly_one_wins(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    sha = repo.create_file("shared.txt", "init", "0")["content"].sha
    clients = [github_hub.client().get_repo(github_hub.repo) for _ in range(8)]
    results, errors = race(8, lambda i: clients[i].update_file("shared.txt", f"writer {i}", f"writer {i}", sha))
    assert len(results) == 1
    assert len(errors) == 7 and {e.status for e in errors} == {409}
    winner = repo.get_git_commit(results[0]["commit"].sha).message
    assert repo.get_contents("shared.txt").decoded_content.decode() == winner


def test_racing_ref_creation_exactly_one_wins(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    main = repo.get_branch("main").commit.sha
    clients = [github_hub.client().get_repo(github_hub.repo) for _ in range(8)]
    results, errors = race(8, lambda i: clients[i].create_git_ref("refs/heads/lock", main))
    assert len(results) == 1
    assert [(e.status, e.data["message"]) for e in errors] == [(422, "Reference already exists")] * 7


def test_refs_get_update_fast_forward_delete(repo):
    main = repo.get_git_ref("heads/main")
    base = main.object.sha
    assert main.ref == "refs/heads/main" and main.object.type == "commit"
    repo.create_git_ref("refs/heads/work", base)
    tip = repo.create_file("w.txt", "on work", "w", branch="work")["commit"].sha

    main.edit(tip)  # fast-forward
    assert repo.get_git_ref("heads/main").object.sha == tip
    with pytest.raises(GithubException) as info:
        main.edit(base)  # backwards without force
    assert info.value.status == 422 and info.value.data["message"] == "Update is not a fast forward"
    main.edit(base, force=True)
    assert repo.get_git_ref("heads/main").object.sha == base

    assert sorted(r.ref for r in repo.get_git_refs()) == ["refs/heads/main", "refs/heads/work"]
    assert [r.ref for r in repo.get_git_matching_refs("heads/wo")] == ["refs/heads/work"]
    repo.get_git_ref("heads/work").delete()
    with pytest.raises(UnknownObjectException):
        repo.get_git_ref("heads/work")


def test_ref_errors(github_hub, repo):
    base = repo.get_branch("main").commit.sha
    bad = call(github_hub, "POST", "/repos/acme/app/git/refs", json={"ref": "refs/heads/x", "sha": "0" * 40})
    assert (bad.status_code, bad.json()["message"]) == (422, "Object does not exist")
    invalid = call(github_hub, "POST", "/repos/acme/app/git/refs", json={"ref": "heads/x", "sha": base})
    assert invalid.status_code == 422
    gone = call(github_hub, "PATCH", "/repos/acme/app/git/refs/heads/none", json={"sha": base})
    assert (gone.status_code, gone.json()["message"]) == (422, "Reference does not exist")
    assert call(github_hub, "DELETE", "/repos/acme/app/git/refs/heads/none").status_code == 422


def test_blobs_trees_commits_move_a_ref(repo):
    head = repo.get_git_commit(repo.get_branch("main").commit.sha)
    blob = repo.create_git_blob(base64.b64encode(b"\x00binary\xff").decode(), "base64")
    assert base64.b64decode(repo.get_git_blob(blob.sha).content) == b"\x00binary\xff"
    tree = repo.create_git_tree(
        [
            InputGitTreeElement("bin/data", "100644", "blob", sha=blob.sha),
            InputGitTreeElement("docs/note.md", "100644", "blob", content="# note"),
            InputGitTreeElement("README.md", "100644", "blob", sha=None),  # delete
        ],
        base_tree=repo.get_git_tree(head.tree.sha),
    )
    assert sorted(e.path for e in tree.tree) == ["bin", "docs"]
    assert sorted(e.path for e in repo.get_git_tree(tree.sha, recursive=True).tree) == [
        "bin",
        "bin/data",
        "docs",
        "docs/note.md",
    ]
    commit = repo.create_git_commit("hand made", tree, [head])
    assert commit.parents[0].sha == head.sha
    repo.get_git_ref("heads/main").edit(commit.sha)
    assert repo.get_contents("docs/note.md").decoded_content == b"# note"
    with pytest.raises(UnknownObjectException):
        repo.get_contents("README.md")


def test_git_data_errors(github_hub, repo):
    tree = repo.get_git_commit(repo.get_branch("main").commit.sha).tree.sha
    no_tree = call(
        github_hub, "POST", "/repos/acme/app/git/commits", json={"message": "m", "tree": "1" * 40, "parents": []}
    )
    assert (no_tree.status_code, no_tree.json()["message"]) == (422, "Tree SHA does not exist")
    no_parent = call(
        github_hub, "POST", "/repos/acme/app/git/commits", json={"message": "m", "tree": tree, "parents": ["2" * 40]}
    )
    assert no_parent.status_code == 422
    bad_blob = call(
        github_hub,
        "POST",
        "/repos/acme/app/git/trees",
        json={"tree": [{"path": "a", "mode": "100644", "type": "blob", "sha": "3" * 40}]},
    )
    assert bad_blob.status_code == 422
    assert call(github_hub, "GET", f"/repos/acme/app/git/blobs/{'4' * 40}").status_code == 404


def test_raw_media_type_and_repository_by_id(github_hub):
    raw = call(
        github_hub, "GET", "/repos/acme/app/contents/README.md", headers={"Accept": "application/vnd.github.raw+json"}
    )
    assert raw.status_code == 200 and raw.content == b"# app\n"
    repo_id = call(github_hub, "GET", "/repos/acme/app").json()["id"]
    assert github_hub.client().get_repo(repo_id).full_name == "acme/app"
    assert call(github_hub, "GET", "/repositories/999").status_code == 404
