"""Configuration: built-in defaults < ``shared.json`` < ``worker-<WORKER_ID>.json`` < environment.

This module owns the schema (every valid key, its type and default), loading and merging the
sources, ``${VAR}`` substitution, and validation errors that name the key, the file and the
closest valid key. Everything else reads configuration through :class:`Config`.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from sentinel_celery.redis_url import RedisURLError, is_sentinel_url, parse_sentinel_url, redact

STRATEGIES = ("pull", "round_robin", "least_loaded", "capacity_based", "affinity")
CONFLICT_RESOLUTIONS = ("last_write_wins", "version_check")
COORDINATION_PATTERNS = ("peer_to_peer", "master_worker", "hierarchical")
SCALERS = ("none", "local", "command")
INTAKE_MODES = ("webhook", "poll", "off")
PERMISSIONS = ("read", "triage", "write", "maintain", "admin")

REDACTED = "***"


class ConfigError(ValueError):
    """A configuration source is invalid; the message names the key and the file."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))

    def describe(self) -> str:
        """``configuration error: …`` on one line for one problem, one line per problem for several."""
        if len(self.errors) == 1:
            return f"configuration error: {self.errors[0]}"
        return "configuration error:\n  " + "\n  ".join(self.errors)


class Free:
    """Schema marker: a mapping whose keys are the user's own (e.g. ``metadata``)."""

    def __init__(self, default: Mapping | None = None):
        self.default = dict(default or {})


def _opt(type_, default, choices=None):
    return {"__type__": type_, "__default__": default, "__choices__": choices}


# Schema: nested dicts; leaves are _opt(...) or Free(...).
SCHEMA: dict[str, Any] = {
    "distributed": {
        "enabled": _opt(bool, True),
        "taskTypes": _opt(list, ["build", "test", "deploy"]),
        "namespace": _opt(str, "sentinel:"),
        "locking": {
            "ttlSeconds": _opt((int, float), 300),
            "retryAttempts": _opt(int, 3),
            "retryDelayMs": _opt(int, 1000),
            "statsRetentionSeconds": _opt((int, float), 7 * 24 * 3600),
        },
        "heartbeat": {
            "intervalMs": _opt(int, 2000),
            "staleThresholdMs": _opt(int, 6000),
            "recoveryEnabled": _opt(bool, True),
            "pingTimeoutMs": _opt(int, 1000),
        },
        "failover": {
            "maxRecoveries": _opt(int, 3),
            "visibilityTimeoutSeconds": _opt(int, 7 * 24 * 3600),
            "offlineRetentionSeconds": _opt(int, 24 * 3600),
            "connectionWatch": _opt(bool, True),
            "connectionGraceMs": _opt(int, 500),
        },
        "loadBalancer": {
            "strategy": _opt(str, "pull", STRATEGIES),
            "affinityEnabled": _opt(bool, False),
            "rebalanceIntervalMs": _opt(int, 10000),
            "options": {
                "startIndex": _opt(int, 0),
                "considerCapacity": _opt(bool, True),
                "weightByCpu": _opt(bool, False),
                "weightByMemory": _opt(bool, False),
                "affinityKey": _opt(str, "project_id"),
                "affinityTtlSeconds": _opt(int, 3600),
                "fallbackStrategy": _opt(str, "least_loaded", STRATEGIES),
            },
        },
        "memorySync": {
            "intervalMs": _opt(int, 5000),
            "conflictResolution": _opt(str, "last_write_wins", CONFLICT_RESOLUTIONS),
            "cacheSize": _opt(int, 1000),
        },
        "coordination": {
            "pattern": _opt(str, "peer_to_peer", COORDINATION_PATTERNS),
            "dispatchIntervalMs": _opt(int, 250),
            "assignmentTtlSeconds": _opt(int, 24 * 3600),
        },
        "autoscale": {
            "enabled": _opt(bool, False),
            "scaler": _opt(str, "none", SCALERS),
            "command": _opt(list, []),
            "minWorkers": _opt(int, 1),
            "maxWorkers": _opt(int, 10),
            "scaleUpUtilization": _opt((int, float), 0.80),
            "scaleUpQueued": _opt(int, 50),
            "scaleDownUtilization": _opt((int, float), 0.20),
            "scaleDownQueued": _opt(int, 10),
            "step": _opt(int, 2),
            "cooldownSeconds": _opt(int, 60),
            "intervalMs": _opt(int, 10000),
            "drainTimeoutSeconds": _opt(int, 3600),
            "local": {
                "app": _opt(str, "sentinel_celery"),
                "concurrency": _opt(int, 2),
                "queues": _opt(list, []),
                "include": _opt(list, []),
                "logDir": _opt(str, ""),
                "idPrefix": _opt(str, "auto"),
            },
        },
    },
    "redis": {
        "url": _opt(str, "redis://127.0.0.1:6379/0"),
        "brokerKeyPrefix": _opt(str, ""),
        # redis+sentinel:// only: how long a command waits for Redis Sentinel to promote a new master
        "failoverWaitSeconds": _opt((int, float), 60),
    },
    # the Celery broker when it is not the Redis above (e.g. amqp://user:pass@host:5672/vhost)
    "broker": {
        "url": _opt(str, ""),
    },
    "rabbitmq": {
        "managementUrl": _opt(str, ""),
    },
    "github": {
        "enabled": _opt(bool, True),
        "owner": _opt(str, ""),
        "repo": _opt(str, ""),
        "token": _opt(str, ""),
        "apiUrl": _opt(str, "https://api.github.com"),
        "appId": _opt(str, ""),
        "privateKeyPath": _opt(str, ""),
        "installationId": _opt(str, ""),
        "webhookSecret": _opt(str, ""),
        "assignees": Free(),
        "mirror": {
            "flushIntervalMs": _opt(int, 5000),
            "maxWritesPerSecond": _opt((int, float), 1),
            "maxWritesPerMinute": _opt(int, 60),
            "outboxMaxLen": _opt(int, 100000),
            "workerIssues": _opt(bool, True),
            "dashboard": _opt(bool, True),
            "linkedTasks": _opt(bool, True),
            "commitStatuses": _opt(bool, True),
            "checkRuns": _opt(str, "auto", ("auto", "always", "never")),  # auto: with GitHub App credentials
            "alertIssues": _opt(bool, True),
            "maxWritesPerHour": _opt(int, 450),
            "reserveRequests": _opt(int, 200),
            "dashboardMinIntervalMs": _opt(int, 120000),
            "workerRefreshMinutes": _opt(int, 30),
            "reconcileIntervalMs": _opt(int, 600000),
            "retryMaxMs": _opt(int, 60000),
            "inWorkers": _opt(bool, True),
        },
        # GitHub → jobs (sentinel_celery/intake/, docs/intake.md); rules and templates: _validate_intake
        "intake": {
            "mode": _opt(str, "webhook", INTAKE_MODES),
            "host": _opt(str, "127.0.0.1"),
            "port": _opt(int, 8790),
            "inWorkers": _opt(bool, False),
            "pollIntervalMs": _opt(int, 5000),
            "minPermission": _opt(str, "write", PERMISSIONS),
            "permissionCacheSeconds": _opt(int, 60),
            "maxCommandsPerIssuePerMinute": _opt(int, 5),
            "maxBodyBytes": _opt(int, 25 * 1024 * 1024),
            "deliveryTtlSeconds": _opt(int, 7 * 24 * 3600),
            "templates": Free(),
            "rules": _opt(list, []),
        },
    },
    "monitoring": {
        "metricsPort": _opt(int, 9808),
        "metricsHost": _opt(str, "127.0.0.1"),
        "logStreamMaxLen": _opt(int, 100000),
        "logShipping": _opt(bool, True),
        "logLevel": _opt(str, "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        "taskEvents": _opt(bool, False),
        "alerts": {
            "utilizationWarning": _opt((int, float), 0.90),
            "healthyWorkersCritical": _opt((int, float), 0.75),
            "queueBacklogWarning": _opt(int, 100),
            "githubBudgetLow": _opt(int, 500),
            "outboxBacklogWarning": _opt(int, 1000),
            "webhookUrl": _opt(str, ""),
            "intervalMs": _opt(int, 15000),
        },
    },
}

WORKER_SCHEMA: dict[str, Any] = {
    "workerId": _opt(str, ""),
    "hostname": _opt(str, ""),
    "capacity": {
        "maxConcurrentTasks": _opt(int, 2),
        "cpuCores": _opt(int, os.cpu_count() or 1),
        "memoryMb": _opt(int, 2048),
        "supportedTaskTypes": _opt(list, []),
    },
    "metadata": Free({"region": "local", "environment": "development"}),
}

# Environment variable -> (section, dotted path, converter)
ENVIRONMENT = {
    "WORKER_ID": ("worker", "workerId", str),
    "WORKER_HOSTNAME": ("worker", "hostname", str),
    "WORKER_MAX_TASKS": ("worker", "capacity.maxConcurrentTasks", int),
    "SUPPORTED_TASK_TYPES": ("worker", "capacity.supportedTaskTypes",
                             lambda v: [t.strip() for t in v.split(",") if t.strip()]),
    "WORKER_REGION": ("worker", "metadata.region", str),
    "WORKER_ROLE": ("worker", "metadata.role", str),      # "leader" under coordination.pattern hierarchical
    "WORKER_GROUP": ("worker", "metadata.group", str),
    "GITHUB_OWNER": ("shared", "github.owner", str),
    "GITHUB_REPO": ("shared", "github.repo", str),
    "GITHUB_TOKEN": ("shared", "github.token", str),
    "GITHUB_API_URL": ("shared", "github.apiUrl", str),
    "GITHUB_APP_ID": ("shared", "github.appId", str),
    "GITHUB_PRIVATE_KEY_PATH": ("shared", "github.privateKeyPath", str),
    "GITHUB_INSTALLATION_ID": ("shared", "github.installationId", str),
    "GITHUB_WEBHOOK_SECRET": ("shared", "github.webhookSecret", str),
    "REDIS_URL": ("shared", "redis.url", str),
    "SENTINEL_NAMESPACE": ("shared", "distributed.namespace", str),
    "SENTINEL_BROKER_PREFIX": ("shared", "redis.brokerKeyPrefix", str),
    "SENTINEL_BROKER_URL": ("shared", "broker.url", str),
    "RABBITMQ_MANAGEMENT_URL": ("shared", "rabbitmq.managementUrl", str),
}

_DAY_MS, _DAY_S = 86_400_000, 86_400

# Allowed (min, max) of numeric keys, inclusive; None: no bound. A timing of 0 or a negative capacity
# would make a worker spin on Redis or declare itself dead; such values are refused at load time.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "distributed.locking.ttlSeconds": (1, 7 * _DAY_S),
    "distributed.locking.retryAttempts": (0, 100),
    "distributed.locking.retryDelayMs": (1, _DAY_MS),
    "distributed.locking.statsRetentionSeconds": (60, 365 * _DAY_S),
    "distributed.heartbeat.intervalMs": (50, 600_000),
    "distributed.heartbeat.staleThresholdMs": (100, _DAY_MS),
    "distributed.heartbeat.pingTimeoutMs": (10, 600_000),
    "distributed.failover.maxRecoveries": (0, 1000),
    "distributed.failover.visibilityTimeoutSeconds": (1, 365 * _DAY_S),
    "distributed.failover.offlineRetentionSeconds": (0, 365 * _DAY_S),
    "distributed.failover.connectionGraceMs": (100, 600_000),
    "distributed.loadBalancer.rebalanceIntervalMs": (100, _DAY_MS),
    "distributed.loadBalancer.options.startIndex": (0, None),
    "distributed.loadBalancer.options.affinityTtlSeconds": (1, 365 * _DAY_S),
    "distributed.memorySync.intervalMs": (50, _DAY_MS),
    "distributed.memorySync.cacheSize": (0, 10_000_000),
    "distributed.coordination.dispatchIntervalMs": (10, 600_000),
    "distributed.coordination.assignmentTtlSeconds": (1, 365 * _DAY_S),
    "distributed.autoscale.minWorkers": (0, 10_000),
    "distributed.autoscale.maxWorkers": (1, 10_000),
    "distributed.autoscale.scaleUpUtilization": (0, 1),
    "distributed.autoscale.scaleUpQueued": (0, None),
    "distributed.autoscale.scaleDownUtilization": (0, 1),
    "distributed.autoscale.scaleDownQueued": (0, None),
    "distributed.autoscale.step": (1, 10_000),
    "distributed.autoscale.cooldownSeconds": (0, _DAY_S),
    "distributed.autoscale.intervalMs": (100, _DAY_MS),
    "distributed.autoscale.drainTimeoutSeconds": (0, 30 * _DAY_S),
    "distributed.autoscale.local.concurrency": (1, 1000),
    "github.mirror.flushIntervalMs": (50, _DAY_MS),
    "github.mirror.maxWritesPerSecond": (0.001, 10_000),
    "github.mirror.maxWritesPerMinute": (1, None),
    "github.mirror.maxWritesPerHour": (1, None),
    "github.mirror.outboxMaxLen": (100, None),
    "github.mirror.reserveRequests": (0, None),
    "github.mirror.dashboardMinIntervalMs": (0, _DAY_MS),
    "github.mirror.workerRefreshMinutes": (1, 7 * 24 * 60),
    "github.mirror.reconcileIntervalMs": (0, 7 * _DAY_MS),
    "github.mirror.retryMaxMs": (1, _DAY_MS),
    "monitoring.metricsPort": (0, 65535),
    "monitoring.logStreamMaxLen": (10, None),
    "monitoring.alerts.utilizationWarning": (0, 1),
    "monitoring.alerts.healthyWorkersCritical": (0, 1),
    "monitoring.alerts.queueBacklogWarning": (0, None),
    "monitoring.alerts.githubBudgetLow": (0, None),
    "monitoring.alerts.outboxBacklogWarning": (0, None),
    "monitoring.alerts.intervalMs": (100, _DAY_MS),
}

WORKER_RANGES: dict[str, tuple[float | None, float | None]] = {
    "capacity.maxConcurrentTasks": (1, 10_000),
    "capacity.cpuCores": (1, 100_000),
    "capacity.memoryMb": (1, None),
}

# (larger, smaller): the first key must be strictly greater than the second
ORDERED_KEYS = [
    ("distributed.heartbeat.staleThresholdMs", "distributed.heartbeat.intervalMs"),
]


def _unit(path: str) -> str:
    return " ms" if path.endswith("Ms") else " s" if path.endswith("Seconds") else ""


def range_problem(path: str, value: Any, ranges: Mapping[str, tuple]) -> str | None:
    """Why ``value`` is outside the allowed range of ``path`` (None if inside or unbounded)."""
    low, high = ranges.get(path, (None, None))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if (low is None or value >= low) and (high is None or value <= high) and value == value:
        return None
    unit = _unit(path)
    if high is None:
        allowed = f"at least {low}{unit}"
    elif low is None:
        allowed = f"at most {high}{unit}"
    else:
        allowed = f"{low} to {high}{unit}"
    return f"allowed range: {allowed}"


#: URL schemes redis-py's ``Redis.from_url`` accepts
REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (works on malformed URLs too)."""
    if is_sentinel_url(str(url)):
        return redact(url)  # a sentinel password may be in the query too
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + REDACTED
    elif at and userinfo:  # redis://secret@host: a lone userinfo is the password
        userinfo = REDACTED
    return f"{scheme}://{userinfo}{at}{hostport}{slash}{path}"


def redis_url_problem(url: Any) -> str | None:
    """What is wrong with a Redis URL, in a few words (None if redis-py can use it)."""
    if not isinstance(url, str) or not url:
        return "it is empty"
    if any(c.isspace() for c in url):
        return "it contains whitespace"
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in REDIS_URL_SCHEMES:
        return "it must start with " + ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES)
    if is_sentinel_url(url):
        try:
            parse_sentinel_url(url)
        except RedisURLError as exc:
            return exc.reason
        return None
    parts = urlsplit(url)
    if scheme == "unix":
        return None if parts.path else "a unix:// URL needs a socket path"
    try:
        port = parts.port
    except ValueError:
        return f"the port '{parts.netloc.rpartition(':')[2]}' is not a number from 1 to 65535"
    if port == 0:
        return "the port must be from 1 to 65535"
    if not parts.hostname:
        return "it has no host"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"the database '{db}' is not a number"
    return None

BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp")

# ${VAR} (required) or ${VAR:-default} (optional, as in the shell)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _defaults(schema: Mapping) -> dict:
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, Free):
            out[key] = dict(spec.default)
        elif "__type__" in spec:
            out[key] = copy.deepcopy(spec["__default__"])
        else:
            out[key] = _defaults(spec)
    return out


def _type_name(type_) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    if isinstance(type_, tuple):
        return "number"
    return names.get(type_, type_.__name__)


def _all_paths(schema: Mapping, prefix: str = "") -> list[str]:
    paths = []
    for key, spec in schema.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if not isinstance(spec, Free) and "__type__" not in spec:
            paths.extend(_all_paths(spec, path + "."))
    return paths


def _closest(key: str, path: str, schema: Mapping, root: Mapping) -> str:
    siblings = list(schema.keys())
    match = difflib.get_close_matches(key, siblings, n=1, cutoff=0.5)
    if match:
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        return f"{parent}{match[0]}"
    everywhere = _all_paths(root)
    match = difflib.get_close_matches(path, everywhere, n=1, cutoff=0.4)
    return match[0] if match else ""


def _validate(data: Any, schema: Mapping, source: str, root: Mapping, prefix: str = "",
              ranges: Mapping[str, tuple] | None = None) -> list[str]:
    errors: list[str] = []
    if not isinstance(data, dict):
        return [f"{source}: '{prefix.rstrip('.') or '<top>'}' must be an object, got {type(data).__name__}"]
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key.startswith("$") or key.startswith("_comment"):
            continue  # "$schema" and comments are tolerated, as in most JSON configs
        spec = schema.get(key)
        if spec is None:
            hint = _closest(key, path, schema, root)
            errors.append(f"{source}: unknown key '{path}'" + (f" (did you mean '{hint}'?)" if hint else ""))
            continue
        if isinstance(spec, Free):
            if not isinstance(value, dict):
                errors.append(f"{source}: '{path}' must be an object, got {type(value).__name__}")
            continue
        if "__type__" not in spec:
            errors.extend(_validate(value, spec, source, root, path + ".", ranges))
            continue
        type_ = spec["__type__"]
        ok = isinstance(value, type_) and not (isinstance(value, bool) and type_ is not bool)
        if not ok:
            errors.append(f"{source}: '{path}' must be a {_type_name(type_)}, got {json.dumps(value)}")
            continue
        choices = spec["__choices__"]
        if choices and value not in choices:
            errors.append(f"{source}: '{path}' is {json.dumps(value)}; valid values: {', '.join(choices)}")
        problem = range_problem(path, value, ranges if ranges is not None else _ranges_for(root))
        if problem:
            errors.append(f"{source}: '{path}' is {json.dumps(value)}; {problem}")
    return errors


def _ranges_for(root: Mapping) -> Mapping[str, tuple]:
    return WORKER_RANGES if root is WORKER_SCHEMA else RANGES if root is SCHEMA else {}


def _leaf_paths(data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, dict):
        return [prefix.rstrip(".")] if prefix else []
    out = []
    for key, value in data.items():
        out.extend(_leaf_paths(value, f"{prefix}{key}."))
    return out


def _ordering_errors(shared: Mapping, origins: Mapping[str, str]) -> list[str]:
    errors = []
    for larger, smaller in ORDERED_KEYS:
        big, small = _get_path(shared, larger), _get_path(shared, smaller)
        if isinstance(big, (int, float)) and isinstance(small, (int, float)) and not big > small:
            errors.append(f"{origins.get(larger, 'defaults')}: '{larger}' ({big}{_unit(larger)}) must be greater "
                          f"than '{smaller}' ({small}{_unit(smaller)}, from {origins.get(smaller, 'defaults')})")
    return errors


_TEMPLATE_KEYS = ("type", "task", "argv", "cwd", "env", "timeout", "environment", "params")
_RULE_KEYS = {
    "push": ("on", "branch", "chain"),
    "issue_comment": ("on", "command", "template", "params"),
    "label": ("on", "prefix"),
}
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER_NAME = re.compile(r"\{(\w*)\}")


def _validate_template(name: str, spec: Any, where: str, task_types: list[str]) -> list[str]:
    key = f"github.intake.templates.{name}"
    if not isinstance(spec, dict):
        return [f"{where}: '{key}' must be an object (type, argv, cwd, env, timeout, environment, params)"]
    errors = [f"{where}: unknown key '{key}.{k}' (valid: {', '.join(_TEMPLATE_KEYS)})" for k in spec
              if k not in _TEMPLATE_KEYS]
    if spec.get("type") not in task_types:
        errors.append(f"{where}: '{key}.type' must be one of distributed.taskTypes ({', '.join(task_types)}), "
                      f"got {json.dumps(spec.get('type'))}")
    argv = spec.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        errors.append(f"{where}: '{key}.argv' must be a non-empty list of strings (never a shell string)")
        argv = []
    params = spec.get("params", {})
    if not isinstance(params, dict):
        errors.append(f"{where}: '{key}.params' must be an object of parameter name -> {{allowed|pattern, default}}")
        params = {}
    for pname, pspec in params.items():
        pkey = f"{key}.params.{pname}"
        if not _PARAM_NAME.match(pname):
            errors.append(f"{where}: '{pkey}': a parameter name is letters, digits and '_'")
        if not isinstance(pspec, dict) or set(pspec) - {"allowed", "pattern", "default"}:
            errors.append(f"{where}: '{pkey}' must be an object with 'allowed' (a list) or 'pattern', and 'default'")
            continue
        allowed = pspec.get("allowed")
        if "allowed" in pspec and not (isinstance(allowed, list) and allowed and all(isinstance(a, str) for a in allowed)):
            errors.append(f"{where}: '{pkey}.allowed' must be a non-empty list of strings")
        if "pattern" in pspec:
            try:
                re.compile(pspec["pattern"])
            except (re.error, TypeError) as exc:
                errors.append(f"{where}: '{pkey}.pattern' is not a regular expression: {exc}")
        if "allowed" not in pspec and "pattern" not in pspec:
            errors.append(f"{where}: '{pkey}' needs 'allowed' or 'pattern': a parameter is never free text")
        if "default" in pspec and not isinstance(pspec["default"], str):
            errors.append(f"{where}: '{pkey}.default' must be a string")
    texts = [*argv, *(v for v in (spec.get("cwd"), spec.get("environment")) if isinstance(v, str))]
    env = spec.get("env", {})
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        errors.append(f"{where}: '{key}.env' must be an object of strings")
    else:
        texts += list(env.values())
    for field in ("cwd", "environment", "task"):
        if field in spec and not isinstance(spec[field], str):
            errors.append(f"{where}: '{key}.{field}' must be a string")
    timeout = spec.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        errors.append(f"{where}: '{key}.timeout' must be a positive number of seconds")
    for text in texts:
        for used in _PLACEHOLDER_NAME.findall(text):
            if used not in params:
                errors.append(f"{where}: '{key}' uses {{{used}}}, which is not one of its params")
    return errors


def _validate_intake(intake: Any, where: str, task_types: list[str]) -> list[str]:
    """The templates and rules of ``github.intake`` (the schema checked their types already)."""
    templates = intake.get("templates") or {}
    errors: list[str] = []
    for name, spec in templates.items():
        errors += _validate_template(name, spec, where, task_types)
    for i, rule in enumerate(intake.get("rules") or []):
        key = f"github.intake.rules[{i}]"
        if not isinstance(rule, dict) or rule.get("on") not in _RULE_KEYS:
            errors.append(f"{where}: '{key}' must be an object with 'on': push, issue_comment or label")
            continue
        on = rule["on"]
        errors += [f"{where}: unknown key '{key}.{k}' for on: {on} (valid: {', '.join(_RULE_KEYS[on])})"
                   for k in rule if k not in _RULE_KEYS[on]]
        if on == "push":
            if not isinstance(rule.get("branch"), str) or not rule["branch"]:
                errors.append(f"{where}: '{key}.branch' must name a branch (a glob such as 'main' or 'release/*')")
            chain = rule.get("chain")
            if not (isinstance(chain, list) and chain and all(isinstance(c, str) for c in chain)):
                errors.append(f"{where}: '{key}.chain' must be a non-empty list of template names")
                chain = []
            errors += [f"{where}: '{key}.chain' names '{c}', which is not in github.intake.templates"
                       for c in chain if c not in templates]
            errors += [f"{where}: '{key}.chain' template '{c}' needs parameters without defaults; a push fills none"
                       for c in chain if isinstance(templates.get(c), dict) and any(
                           isinstance(p, dict) and "default" not in p
                           for p in (templates[c].get("params") or {}).values())]
        elif on == "issue_comment":
            command = rule.get("command")
            if not (isinstance(command, str) and re.fullmatch(r"/[A-Za-z0-9_-]+", command)):
                errors.append(f"{where}: '{key}.command' must be one word starting with '/', such as '/deploy'")
            template = rule.get("template")
            if template is not None and template not in templates:
                errors.append(f"{where}: '{key}.template' is '{template}', which is not in github.intake.templates")
            params = rule.get("params", [])
            if not (isinstance(params, list) and all(isinstance(p, str) for p in params)):
                errors.append(f"{where}: '{key}.params' must be a list of parameter names")
            elif isinstance(templates.get(template), dict):
                known = templates[template].get("params") or {}
                errors += [f"{where}: '{key}.params' names '{p}', which is not a parameter of template '{template}'"
                           for p in params if p not in known]
        elif "prefix" in rule and not (isinstance(rule["prefix"], str) and rule["prefix"]):
            errors.append(f"{where}: '{key}.prefix' must be a non-empty string such as 'sentinel:run-'")
    return errors

def _url_errors(shared: Mapping, origins: Mapping[str, str]) -> list[str]:
    """``broker.url`` and ``rabbitmq.managementUrl`` must be URLs Sentinel can use (never echoed: they
    may carry a password)."""
    errors = []
    broker = shared["broker"]["url"]
    scheme = broker.split("://", 1)[0].split("+")[0].lower() if "://" in broker else ""
    if broker and scheme not in BROKER_SCHEMES:
        errors.append(f"{origins.get('broker.url', 'defaults')}: 'broker.url' must start with one of "
                      f"{', '.join(s + '://' for s in BROKER_SCHEMES)} (got scheme {scheme or 'none'!r})")
    management = shared["rabbitmq"]["managementUrl"]
    if management:
        m_scheme, _, rest = management.partition("://")
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        if m_scheme not in ("http", "https") or not host:
            errors.append(f"{origins.get('rabbitmq.managementUrl', 'defaults')}: 'rabbitmq.managementUrl' must be http(s)://[user:password@]host:port of "
                          f"RabbitMQ's management API")
    return errors


def _substitute(value: Any, source: str, environ: Mapping[str, str], errors: list[str]) -> Any:
    if isinstance(value, str):
        def repl(m):
            name, default = m.group(1), m.group(2)
            if name not in environ and default is not None:
                return default
            if name not in environ:
                errors.append(f"{source}: environment variable '{name}' is not set (used as ${{{name}}})")
                return ""
            return environ[name]
        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, source, environ, errors) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, source, environ, errors) for k, v in value.items()}
    return value


def _merge(base: dict, override: Mapping) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def _get_path(data: Mapping, dotted: str, default: Any = None) -> Any:
    for p in dotted.split("."):
        if not isinstance(data, Mapping) or p not in data:
            return default
        data = data[p]
    return data


def _read_json(path: Path, environ: Mapping[str, str], errors: list[str]) -> dict:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        errors.append(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return {}
    return _substitute(raw, str(path), environ, errors)


class Config:
    """The merged configuration of one process: ``shared`` (cluster-wide) and ``worker`` (this worker)."""

    #: the ``worker-<WORKER_ID>.json`` looked for and not found (the worker says so at start)
    missing_worker_file: str | None = None

    def __init__(self, shared: dict, worker: dict, sources: list[str],
                 origins: Mapping[str, str] | None = None):
        self.shared = shared
        self.worker = worker
        self.sources = sources
        self.origins = dict(origins or {})

    def source_of(self, dotted: str) -> str:
        """Where a key's value came from: a file, ``environment (VAR)``, ``overrides`` or ``defaults``
        (``worker:capacity.maxConcurrentTasks`` for a key of the worker section)."""
        return self.origins.get(dotted, "defaults")

    def get(self, dotted: str, default: Any = None) -> Any:
        return _get_path(self.shared, dotted, default)

    def worker_get(self, dotted: str, default: Any = None) -> Any:
        return _get_path(self.worker, dotted, default)

    @property
    def namespace(self) -> str:
        return self.get("distributed.namespace")

    @property
    def redis_url(self) -> str:
        return self.get("redis.url")

    @property
    def broker_url(self) -> str:
        """The Celery broker: ``broker.url``, else the Redis of ``redis.url``."""
        return self.get("broker.url") or self.redis_url

    @property
    def task_types(self) -> list[str]:
        return list(self.get("distributed.taskTypes"))

    @property
    def worker_id(self) -> str:
        """The configured id; a Celery worker without one uses its nodename (set at worker init)."""
        return self.worker["workerId"] or f"{self.worker['hostname']}-{os.getpid()}"

    @property
    def supported_task_types(self) -> list[str]:
        return list(self.worker["capacity"]["supportedTaskTypes"]) or self.task_types

    def as_dict(self, redact: bool = True) -> dict:
        data = {"shared": copy.deepcopy(self.shared), "worker": copy.deepcopy(self.worker),
                "sources": list(self.sources)}
        for secret in ("token", "webhookSecret"):
            if redact and data["shared"]["github"].get(secret):
                data["shared"]["github"][secret] = REDACTED
        return data

    def __repr__(self) -> str:  # never show the token
        return f"<Config worker={self.worker_id!r} sources={self.sources!r}>"


def load_config(config_dir: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load and validate the configuration; raise :class:`ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    config_dir = Path(config_dir or environ.get("SENTINEL_CONFIG_DIR") or "./config")
    errors: list[str] = []
    sources = ["defaults"]
    origins: dict[str, str] = {}  # dotted key -> the source that set it; "worker:<key>" for the worker section
    shared = _defaults(SCHEMA)
    worker = _defaults(WORKER_SCHEMA)

    shared_file = config_dir / "shared.json"
    intake_source = "merged config"
    if shared_file.is_file():
        data = _read_json(shared_file, environ, errors)
        file_errors = _validate(data, SCHEMA, str(shared_file), SCHEMA)
        if isinstance(data, dict) and "intake" in (data.get("github") or {}):
            intake_source = str(shared_file)
        errors.extend(file_errors)
        if not file_errors:
            _merge(shared, data)
            origins.update(dict.fromkeys(_leaf_paths(data), str(shared_file)))
        sources.append(str(shared_file))

    worker_id = environ.get("WORKER_ID", "")
    if worker_id:
        worker_file = config_dir / f"worker-{worker_id}.json"
        if worker_file.is_file():
            data = _read_json(worker_file, environ, errors)
            file_errors = _validate(data, WORKER_SCHEMA, str(worker_file), WORKER_SCHEMA)
            errors.extend(file_errors)
            if not file_errors:
                _merge(worker, data)
                origins.update(dict.fromkeys((f"worker:{p}" for p in _leaf_paths(data)), str(worker_file)))
            sources.append(str(worker_file))

    for name, (section, dotted, convert) in ENVIRONMENT.items():
        if name in environ and environ[name] != "":
            try:
                value = convert(environ[name])
            except ValueError:
                errors.append(f"environment: {name}={environ[name]!r} is not a valid {dotted} value")
                continue
            problem = range_problem(dotted, value, RANGES if section == "shared" else WORKER_RANGES)
            if problem:
                errors.append(f"environment: {name}={environ[name]!r} is out of range for {dotted}; {problem}")
                continue
            _set_path(shared if section == "shared" else worker, dotted, value)
            origins[dotted if section == "shared" else f"worker:{dotted}"] = f"environment ({name})"
            if "environment" not in sources:
                sources.append("environment")

    for dotted, value in (overrides or {}).items():
        section, _, path = dotted.partition(":")
        if not path:
            section, path = "shared", dotted
        _set_path(shared if section == "shared" else worker, path, value)
        origins[path if section == "shared" else f"worker:{path}"] = "overrides"

    errors.extend(_validate(worker, WORKER_SCHEMA, "merged worker config", WORKER_SCHEMA))
    errors.extend(_validate(shared, SCHEMA, "merged config", SCHEMA))
    task_types = shared["distributed"]["taskTypes"]
    if not errors:
        errors.extend(_validate_intake(shared["github"]["intake"], intake_source, task_types))
    for t in worker["capacity"]["supportedTaskTypes"]:
        if t not in task_types:
            errors.append(f"worker config: supportedTaskTypes has '{t}', which is not one of "
                          f"distributed.taskTypes ({', '.join(task_types)})")
    url_problem = redis_url_problem(shared["redis"]["url"])
    if url_problem and isinstance(shared["redis"]["url"], str):
        errors.append(f"{origins.get('redis.url', 'defaults')}: 'redis.url' {redact_url(shared['redis']['url'])!r} "
                      f"is not a Redis URL: {url_problem}")
    if not errors:
        errors.extend(_ordering_errors(shared, origins))
    errors.extend(_url_errors(shared, origins))
    if errors:
        raise ConfigError(errors)

    if not worker["hostname"]:
        worker["hostname"] = socket.gethostname()
    cfg = Config(shared, worker, sources, origins)
    if worker_id and str(worker_file) not in sources:
        cfg.missing_worker_file = os.path.abspath(worker_file)
    return cfg


_current: Config | None = None


def get_config(reload: bool = False) -> Config:
    """The process-wide configuration, loaded once from the environment."""
    global _current
    if _current is None or reload:
        _current = load_config()
    return _current


def set_config(config: Config) -> None:
    global _current
    _current = config
