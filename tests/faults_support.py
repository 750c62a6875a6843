"""What the fault tests share: the run log their tasks write (tests/fault_jobs.py) and its tallies."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

INCLUDE = ("tests.jobs", "tests.fault_jobs")


def read_runlog(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tally(path: Path) -> dict:
    """Starts and ends per task id, and the ids that ran (ended) more than once."""
    entries = read_runlog(path)
    starts = Counter(e["id"] for e in entries if e["phase"] == "start")
    ends = Counter(e["id"] for e in entries if e["phase"] == "end")
    return {"starts": sum(starts.values()), "ends": sum(ends.values()),
            "ended": set(ends), "twice": {i for i, n in ends.items() if n > 1}, "entries": entries}
