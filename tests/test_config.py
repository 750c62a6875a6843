"""Configuration: merge order, ${VAR} substitution and every kind of error."""
import json

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.config import ConfigError, load_config


def write(d, name, data):
    (d / name).write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_sources_merge_in_order_defaults_shared_worker_env(tmp_path):
    write(tmp_path, "shared.json", {"distributed": {"locking": {"ttlSeconds": 60, "retryAttempts": 5}}})
    write(tmp_path, "worker-007.json", {"workerId": "007", "capacity": {"maxConcurrentTasks": 8},
                                        "metadata": {"region": "eu", "rack": "r1"}})
    cfg = load_config(tmp_path, environ={"WORKER_ID": "007", "WORKER_MAX_TASKS": "3",
                                         "SUPPORTED_TASK_TYPES": "build, test", "REDIS_URL": "redis://h:1/2"})
    assert cfg.get("distributed.locking.ttlSeconds") == 60           # shared.json over default
    assert cfg.get("distributed.locking.retryDelayMs") == 1000       # default kept
    assert cfg.get("distributed.locking.retryAttempts") == 5
    assert cfg.worker["capacity"]["maxConcurrentTasks"] == 3         # env over worker file
    assert cfg.worker["capacity"]["supportedTaskTypes"] == ["build", "test"]
    assert cfg.worker["metadata"] == {"region": "eu", "rack": "r1", "environment": "development"}
    assert cfg.redis_url == "redis://h:1/2"
    assert cfg.sources == ["defaults", str(tmp_path / "shared.json"), str(tmp_path / "worker-007.json"),
                           "environment"]


def test_placeholders_are_substituted_and_a_missing_one_names_variable_and_file(tmp_path):
    write(tmp_path, "shared.json", {"github": {"owner": "${OWNER}", "repo": "${REPO:-app}", "token": "${TOKEN}"}})
    cfg = load_config(tmp_path, environ={"OWNER": "acme", "TOKEN": "t0k"})
    assert (cfg.get("github.owner"), cfg.get("github.repo"), cfg.get("github.token")) == ("acme", "app", "t0k")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={"OWNER": "acme"})
    assert "'TOKEN'" in str(err.value) and "shared.json" in str(err.value)


def test_unknown_key_names_key_file_and_closest_valid_key(tmp_path):
    write(tmp_path, "shared.json", {"distributed": {"heartbeat": {"intervalMS": 100}}})
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={})
    msg = str(err.value)
    assert "unknown key 'distributed.heartbeat.intervalMS'" in msg
    assert str(tmp_path / "shared.json") in msg
    assert "did you mean 'distributed.heartbeat.intervalMs'" in msg


def test_unknown_key_in_worker_file(tmp_path):
    write(tmp_path, "worker-9.json", {"capacity": {"maxConcurentTasks": 2}})
    with pytest.raises(ConfigError, match=r"worker-9.json: unknown key 'capacity.maxConcurentTasks' "
                                          r"\(did you mean 'capacity.maxConcurrentTasks'"):
        load_config(tmp_path, environ={"WORKER_ID": "9"})


def test_wrong_type_names_expected_type(tmp_path):
    write(tmp_path, "shared.json", {"distributed": {"locking": {"ttlSeconds": "300"}, "enabled": "yes"}})
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={})
    assert "'distributed.locking.ttlSeconds' must be a number, got \"300\"" in str(err.value)
    assert "'distributed.enabled' must be a boolean" in str(err.value)


def test_unknown_strategy_lists_valid_ones(tmp_path):
    write(tmp_path, "shared.json", {"distributed": {"loadBalancer": {"strategy": "random"}}})
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={})
    assert "valid values: pull, round_robin, least_loaded, capacity_based, affinity" in str(err.value)


def test_bad_env_value_and_unknown_supported_type(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={"WORKER_MAX_TASKS": "many", "SUPPORTED_TASK_TYPES": "build,lint"})
    assert "WORKER_MAX_TASKS='many'" in str(err.value)
    assert "supportedTaskTypes has 'lint'" in str(err.value)


def test_invalid_json_names_file_and_line(tmp_path):
    write(tmp_path, "shared.json", '{\n  "distributed": {,\n}')
    with pytest.raises(ConfigError, match=r"shared.json: invalid JSON at line 2"):
        load_config(tmp_path, environ={})


def test_shipped_config_is_valid_for_every_example_worker():
    for worker_id in ("", "001", "002", "003"):
        cfg = load_config("config", environ={"WORKER_ID": worker_id} if worker_id else {})
        assert cfg.get("distributed.heartbeat.intervalMs") == 2000
        assert cfg.get("distributed.heartbeat.staleThresholdMs") == 6000
    assert load_config("config", environ={"WORKER_ID": "001"}).supported_task_types == ["build"]


def test_config_check_prints_merged_config_with_token_redacted(tmp_path, monkeypatch):
    write(tmp_path, "shared.json", {"github": {"token": "${GH}"}})
    monkeypatch.setenv("GH", "ghp_secret_value")
    out = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    assert "ghp_secret_value" not in out.output
    assert json.loads(out.output)["shared"]["github"]["token"] == "***"


def test_config_check_reports_errors_with_nonzero_exit(tmp_path):
    write(tmp_path, "shared.json", {"distributed": {"lockng": {}}})
    out = CliRunner().invoke(main, ["config", "check", "--config-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert "unknown key 'distributed.lockng'" in out.output and "did you mean 'distributed.locking'" in out.output
