"""A real RabbitMQ for the tests: the shared one on 127.0.0.1:5672 (each test in its own vhost), else a
private node when ``rabbitmq-server`` is installed, else a skip with one reason.

A private node has its own name, ports (AMQP, distribution, management), data and log directories and
config file, and is stopped with ``rabbitmqctl -n <node> stop``; waits are bounded.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SHARED_HOST, SHARED_PORT = "127.0.0.1", 5672
START_TIMEOUT_S = 60


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def skip_reason() -> str | None:
    """None when a RabbitMQ can be had, else why not."""
    if port_answers(SHARED_HOST, SHARED_PORT):
        if shutil.which("rabbitmqctl"):
            return None
        return "RabbitMQ answers on 127.0.0.1:5672 but rabbitmqctl is not installed (needed for a test vhost)"
    if shutil.which("rabbitmq-server") and shutil.which("rabbitmqctl"):
        return None
    return "no RabbitMQ on 127.0.0.1:5672 and rabbitmq-server is not installed"


class PrivateNode:
    """A RabbitMQ node of the test's own; see the module docstring."""

    def __init__(self, *, consumer_timeout_ms: int | None = None, management: bool = False):
        # rabbitmq-server drops to the rabbitmq user when started as root: its directories must be its own
        self.base = Path(tempfile.mkdtemp(prefix="sentinel-rabbitmq-"))
        self.name = f"sentinel-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.management_port = free_port() if management else None
        self.consumer_timeout_ms = consumer_timeout_ms
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.out"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def management_url(self) -> str | None:
        return f"http://guest:guest@127.0.0.1:{self.management_port}" if self.management_port else None

    def start(self) -> "PrivateNode":
        for d in ("mnesia", "log", "plugins-expand"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        conf = [f"listeners.tcp.default = 127.0.0.1:{self.port}", "loopback_users = none"]
        if self.consumer_timeout_ms is not None:
            conf.append(f"consumer_timeout = {self.consumer_timeout_ms}")
        if self.management_port:
            conf += [f"management.tcp.port = {self.management_port}", "management.tcp.ip = 127.0.0.1"]
        (self.base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        # the channel checks consumer timeouts once per tick (60 s by default): tick every second
        (self.base / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 1000}]}].\n")
        plugins = "[rabbitmq_management]." if self.management_port else "[]."
        (self.base / "enabled_plugins").write_text(plugins + "\n")
        _give_to_rabbitmq_user(self.base)
        env = {**os.environ,
               "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"), "RABBITMQ_LOG_BASE": str(self.base / "log"),
               "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
               "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
               "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "feature_flags"),
               "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.base / "plugins-expand"),
               "ERL_CRASH_DUMP": str(self.base / "erl_crash.dump"),
               "RABBITMQ_PID_FILE": str(self.base / "node.pid")}
        self.proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {self.log_path.read_text()[-2000:]}")
            if port_answers("127.0.0.1", self.port) and (
                    not self.management_port or port_answers("127.0.0.1", self.management_port)):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"private RabbitMQ node did not start in {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            rabbitmqctl("stop", node=self.name, timeout=60)
            self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.base, ignore_errors=True)


def _give_to_rabbitmq_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("rabbitmq")
    except KeyError:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


class Vhost:
    """A vhost of the test's own on a node, deleted afterwards."""

    def __init__(self, node: str | None, host: str, port: int):
        self.node = node
        self.name = f"sentinel-test-{uuid.uuid4().hex[:10]}"
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{self.name}"

    def create(self) -> "Vhost":
        for args in (("add_vhost", self.name), ("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")):
            done = rabbitmqctl(*args, node=self.node)
            if done.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
        return self

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name, node=self.node)


@pytest.fixture(scope="session")
def rabbitmq_node():
    """(node name for rabbitmqctl or None for the shared one, host, port)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if port_answers(SHARED_HOST, SHARED_PORT):
        yield None, SHARED_HOST, SHARED_PORT
        return
    node = PrivateNode().start()
    try:
        yield node.name, "127.0.0.1", node.port
    finally:
        node.stop()


@pytest.fixture
def amqp_url(rabbitmq_node):
    node, host, port = rabbitmq_node
    vhost = Vhost(node, host, port).create()
    yield vhost.url
    vhost.delete()


@pytest.fixture
def private_rabbitmq():
    """Start a private node: ``private_rabbitmq(consumer_timeout_ms=5000, management=True)``."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if not shutil.which("rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed (this test needs a node with its own settings)")
    nodes = []

    def start(**options) -> PrivateNode:
        node = PrivateNode(**options)
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()
