"""The README's "Your tasks, your worker" example, run exactly as written: its two files in a fresh
directory, the worker command it shows (a real Celery worker), the enqueue script in another process."""
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your tasks, your worker"


def section_text() -> str:
    text = README.read_text()
    assert SECTION in text, f"README has no '{SECTION}' section"
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end != -1 else None]


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def file_block(blocks, name: str) -> str:
    found = [body for lang, body in blocks if lang == "python" and body.startswith(f"# {name}\n")]
    assert len(found) == 1, f"the section must hold one python block starting with '# {name}'"
    return found[0]


def test_the_section_comes_before_the_long_material():
    text = README.read_text()
    position = text.index(SECTION)
    for later in ("## Use it", "## Configuration", "## Throughput", "## FIDELITY"):
        assert position < text.index(later), later


def test_readme_example_runs_as_written(sentinel_env, tmp_path):
    blocks = code_blocks(section_text())
    (tmp_path / "yourmodule.py").write_text(file_block(blocks, "yourmodule.py"))
    (tmp_path / "enqueue.py").write_text(file_block(blocks, "enqueue.py"))
    commands = [line.strip() for lang, body in blocks if lang == "bash" for line in body.splitlines()
                if line.strip().startswith("celery ")]
    assert commands == ["celery -A yourmodule worker -Q build"], commands
    argv = [sys.executable, "-m", *shlex.split(commands[0])]  # `celery` of this interpreter's environment

    env = {**os.environ, **sentinel_env}
    env.pop("WORKER_ID", None)
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        run = subprocess.run([sys.executable, "enqueue.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        assert run.returncode == 0, run.stderr[-3000:] + "\n--- worker ---\n" + worker_log[-3000:]
        lines = run.stdout.splitlines()
        assert lines[0] == "assets of shop compiled", run.stdout
        assert re.fullmatch(r"\{'project': 'shop', 'version': '1\.4\.2', 'lease_token': \d+\}", lines[1]), run.stdout
        assert "NotRegistered" not in worker_log and "Traceback" not in worker_log
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
