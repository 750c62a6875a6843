"""docker-compose.yml and the Dockerfile: every command is a real subcommand, every config file loads.

No Docker engine is needed: each service's command is run locally with ``--help`` appended (click
parses the options that come before it, so a wrong option fails too), with the service's environment
and its config volume mapped to the repository's ``config/``.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentinel_celery.config import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SENTINEL_SERVICES = [name for name, s in SERVICES.items() if s.get("build")]
CONFIGURED_SERVICES = [name for name in SENTINEL_SERVICES if "SENTINEL_CONFIG_DIR" in
                       (SERVICES[name].get("environment") or {})]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def expand(value: str) -> str:
    """Compose's ${VAR} / ${VAR:-default}, with an empty host environment (the defaults must work)."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def local_env(service: dict) -> dict:
    """The service's environment, with container paths of mounted volumes mapped to this checkout."""
    env = {k: expand(v) for k, v in (service.get("environment") or {}).items()}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            for k, v in env.items():
                if v == target or v.startswith(target + "/"):
                    env[k] = str(ROOT / source) + v[len(target):]
    return env


def test_compose_has_the_cluster():
    assert {"redis", "hub", "worker-build", "worker-test", "worker-deploy", "monitor", "metrics",
            "flower"} <= SERVICES.keys()
    assert (ROOT / "Dockerfile").is_file()
    for name in SENTINEL_SERVICES:
        assert SERVICES[name]["build"] == ".", name
    flower = [expand(a) for a in SERVICES["flower"]["command"]]
    assert "--basic-auth" in flower and ":" in flower[flower.index("--basic-auth") + 1]
    published = {p.split(":")[-1] for p in SERVICES["hub"]["ports"]}
    metrics = SERVICES["metrics"]["command"]
    assert metrics[metrics.index("--port") + 1] in published
    assert "5555" in published
    assert set(CONFIGURED_SERVICES) == set(SENTINEL_SERVICES) - {"hub"}  # the hub keeps its own state


@pytest.mark.parametrize("name", SENTINEL_SERVICES)
def test_service_command_is_a_real_subcommand(name, tmp_path):
    service = SERVICES[name]
    command = [expand(a) for a in service["command"]]
    program, args = command[0], command[1:]
    assert program in ("sentinel", "celery"), f"{name}: runs {program!r}, not sentinel or celery"
    module = "sentinel_celery.cli" if program == "sentinel" else "celery"
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", **local_env(service), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", module, *args, "--help"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, f"{name}: {' '.join(command)} --help failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Usage:" in proc.stdout


@pytest.mark.parametrize("name", CONFIGURED_SERVICES)
def test_service_config_loads(name):
    env = local_env(SERVICES[name])
    config_dir = Path(env["SENTINEL_CONFIG_DIR"])
    assert (config_dir / "shared.json").is_file(), f"{name}: no shared.json in {config_dir}"
    if env.get("WORKER_ID"):
        assert (config_dir / f"worker-{env['WORKER_ID']}.json").is_file(), name
    cfg = load_config(config_dir, environ=env)
    assert cfg.redis_url == "redis://redis:6379/0"
    if env.get("WORKER_ID"):
        assert cfg.worker_id == env["WORKER_ID"]
        assert cfg.supported_task_types == [t.strip() for t in env["SUPPORTED_TASK_TYPES"].split(",")]
        assert cfg.worker_get("capacity.maxConcurrentTasks") == int(env["WORKER_MAX_TASKS"])
        assert cfg.worker_get("metadata.region") == env["WORKER_REGION"]


def test_every_task_type_has_a_worker():
    types = set()
    for name in SENTINEL_SERVICES:
        env = local_env(SERVICES[name])
        if env.get("SUPPORTED_TASK_TYPES"):
            types.update(t.strip() for t in env["SUPPORTED_TASK_TYPES"].split(","))
    cfg = load_config(ROOT / "config", environ={})
    assert set(cfg.task_types) <= types
