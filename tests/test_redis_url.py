"""``redis+sentinel://``: parsing, its translations for kombu and the result backend, one-line errors,
and Sentinel's own client following a master switch of a real Redis Sentinel deployment."""
import json
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.config import load_config, set_config
from sentinel_celery.github.backend import GitHubSentinelBackend
from sentinel_celery.ops.embedded import free_port
from sentinel_celery.plugin import create_app
from sentinel_celery.redis_url import (
    RedisURLError,
    SentinelURL,
    kombu_sentinel_url,
    kombu_transport_options,
    parse_sentinel_url,
    redact,
)
from sentinel_celery.state.connection import get_redis
from tests.github_support import shared_with_mirror


def test_the_documented_form_parses_with_defaults():
    url = parse_sentinel_url("redis+sentinel://:s3cret@h1:26379,h2:26380,h3/mymaster/2")
    assert url == SentinelURL((("h1", 26379), ("h2", 26380), ("h3", 26379)), "mymaster", 2, None, "s3cret")
    assert url.password == "s3cret" and url.sentinel_password is None
    assert parse_sentinel_url("redis+sentinel://h1:26379/mymaster").db == 0
    assert parse_sentinel_url("redis+sentinel://h1:26379/mymaster/").db == 0
    both = parse_sentinel_url("redis+sentinel://app:p%40ss@[::1]:26379/m/0?sentinel_password=sp")
    assert (both.username, both.password, both.sentinel_password, both.sentinels) == ("app", "p@ss", "sp",
                                                                                       (("::1", 26379),))


def test_translations_for_kombu_and_the_result_backend():
    url = parse_sentinel_url("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/3?sentinel_password=sp")
    assert kombu_sentinel_url(url) == "sentinel://:pw@h1:26379/3;sentinel://:pw@h2:26380/3"
    assert kombu_transport_options(url) == {"master_name": "mymaster", "sentinel_kwargs": {"password": "sp"}}
    assert kombu_transport_options(parse_sentinel_url("redis+sentinel://h1/m")) == {"master_name": "m"}


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://", "no sentinel host"),
    ("redis+sentinel://h1:26379", "no master name"),
    ("redis+sentinel://h1:26379/", "no master name"),
    ("redis+sentinel://h1,,h2/m", "an empty sentinel address"),
    ("redis+sentinel://h1:port/m", "'h1:port' has no valid port"),
    ("redis+sentinel://h1:70000/m", "'h1:70000' has no valid port"),
    ("redis+sentinel://h1/m/zero", "the database must be a number, got 'zero'"),
    ("redis+sentinel://h1/m/0/extra", "the path must be /<master name>/<db>"),
    ("redis+sentinel://:pw@h1/m?password=x", "unknown parameter 'password'"),
    ("redis://h1:6379/0", "not a redis+sentinel:// URL"),
])
def test_bad_urls_are_one_line_that_never_shows_a_password(url, message):
    with pytest.raises(RedisURLError) as err:
        parse_sentinel_url(url)
    text = str(err.value)
    assert message in text and "\n" not in text and "pw" not in text


def test_redact_hides_both_passwords():
    assert redact("redis+sentinel://u:pw@h1:1,h2:2/m/0?sentinel_password=sp") == \
        "redis+sentinel://u:***@h1:1,h2:2/m/0?sentinel_password=***"
    assert redact("redis+sentinel://h1/m") == "redis+sentinel://h1/m"


def use_url(monkeypatch, tmp_path, url):
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("SENTINEL_CONFIG_DIR", str(tmp_path))
    set_config(load_config())


def test_config_check_names_the_key_of_a_bad_sentinel_url(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:topsecret@h1:26379/mymaster/x")
    out = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert ("environment (REDIS_URL): 'redis.url' 'redis+sentinel://:***@h1:26379/mymaster/x' is not a Redis URL: "
            "the database must be a number, got 'x'") in out.output
    assert "topsecret" not in out.output
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:topsecret@h1:26379/mymaster/0")
    ok = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["shared"]["redis"]["url"] == "redis+sentinel://:***@h1:26379/mymaster/0"


def test_no_reachable_sentinel_is_one_line_at_once(monkeypatch, tmp_path):
    ports = [free_port(), free_port()]
    use_url(monkeypatch, tmp_path, f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster/0")
    started = time.monotonic()
    out = CliRunner().invoke(main, ["workers", "list"])
    assert out.exit_code != 0
    line = out.output.strip()
    assert line == (f"sentinel: cannot reach the Redis master 'mymaster' via sentinels 127.0.0.1:{ports[0]},"
                    f"127.0.0.1:{ports[1]}: no sentinel reachable at 127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    assert time.monotonic() - started < 10  # not the failover wait: this master was never reached


def test_wrong_master_name_is_one_line_and_the_right_one_works(redis_ha, monkeypatch, tmp_path):
    wrong = redis_ha.url.replace("/mymaster/", "/mymastr/")
    use_url(monkeypatch, tmp_path, wrong)
    out = CliRunner().invoke(main, ["workers", "list"])
    assert out.exit_code != 0
    assert "know no master named 'mymastr' (they know: mymaster)" in out.output
    assert len(out.output.strip().splitlines()) == 1
    use_url(monkeypatch, tmp_path, redis_ha.url)
    ok = CliRunner().invoke(main, ["workers", "list", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == []


def test_sentinels_own_client_follows_a_killed_primary_without_a_restart(redis_ha, monkeypatch, tmp_path):
    use_url(monkeypatch, tmp_path, redis_ha.url)
    client = get_redis(redis_ha.url)
    client.set("ha:before", "1")
    assert client.connection_pool.get_master_address()[1] == redis_ha.primary_port
    client.execute_command("WAIT", 1, 1000)
    old = redis_ha.kill_primary()
    # the same client object: its next command waits for the promotion and goes to the new primary
    assert client.incr("ha:after") == 1
    assert client.get("ha:before") == "1"   # it was replicated (WAITed) before the kill
    new = redis_ha.wait_switch(old)
    assert client.connection_pool.get_master_address()[1] == new != old


def test_results_and_the_github_mirror_on_a_sentinel_deployment(redis_ha, github_hub, monkeypatch, tmp_path):
    (tmp_path / "shared.json").write_text(json.dumps(shared_with_mirror()))
    for key, value in {"REDIS_URL": redis_ha.url, "SENTINEL_CONFIG_DIR": str(tmp_path),
                       "SENTINEL_NAMESPACE": "ghha:", "SENTINEL_BROKER_PREFIX": "ghha:",
                       "GITHUB_OWNER": github_hub.owner, "GITHUB_REPO": github_hub.repo.split("/", 1)[1],
                       "GITHUB_TOKEN": github_hub.token, "GITHUB_API_URL": github_hub.base_url}.items():
        monkeypatch.setenv(key, value)
    set_config(load_config())
    app = create_app("sentinel_celery")
    try:
        # Celery's sentinel:// result backend, with the GitHub events in the same pipeline
        assert isinstance(app.backend, GitHubSentinelBackend)
        assert app.conf.result_backend.startswith("githubsentinel+sentinel://127.0.0.1:")
        repo = github_hub.client().get_repo(github_hub.repo)
        number = repo.create_issue("a linked job").number
        request = SimpleNamespace(id="gh-ha-1", kwargs={"github_issue": number}, task="tests.ha.step",
                                  delivery_info={"routing_key": "build"}, retries=0)
        app.backend.store_result("gh-ha-1", {"built": True}, "SUCCESS", request=request)
        assert app.AsyncResult("gh-ha-1").get(timeout=10) == {"built": True}
        out = CliRunner().invoke(main, ["github", "sync"])
        assert out.exit_code == 0, out.output
        assert {label.name for label in repo.get_issue(number).labels} == {"sentinel:done"}
        status = CliRunner().invoke(main, ["github", "status", "--json"])
        assert status.exit_code == 0 and json.loads(status.output)["outbox_depth"] == 0, status.output
    finally:
        app.close()
