"""The figures of a benchmark run: printed, and written to docs/performance.md.

Each benchmark owns the part of the file between its markers
(`<!-- bench:<key>:start -->` ... `<!-- bench:<key>:end -->`); a run rewrites only the
sections of the benchmarks it ran and leaves the rest of the file alone.
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
INTRO = """# Performance

Measured by the benchmarks in `bench/` (`make bench`, or `.venv/bin/python bench/run.py`
with `--only recheck`, `--only sweep`, `--only admin` or `--only api`). They need only PostgreSQL at `BENCH_DATABASE_URL`
(default `postgres://postgres@127.0.0.1:5432/recovery_bench`): the database is created and
migrated if needed, and the dataset of 1,000,000 orders is generated once (about a minute)
and reused while its parameters, the generator and the migrations stay the same.

The sections below are rewritten by each run of their benchmark; edit the text outside the
markers only. The machine is shared: other work running at the same time (the load average
is recorded with each run) slows every figure down, so compare runs with similar load.
"""


@dataclass
class Result:
    key: str
    title: str
    ok: bool
    headline: list[str]  # printed at the end of the run
    markdown: str  # the section body, between the markers
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        mark = "OK  " if self.ok else "MISS"
        return "\n".join([f"[{mark}] {self.title}", *("       " + line for line in self.headline)])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    from django.db import connection

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB RAM"
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0].split()[0]
        cursor.execute("SHOW shared_buffers")
        buffers = cursor.fetchone()[0]
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "load": load,
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "postgresql": f"{pg} (shared_buffers {buffers}, same machine)",
        "python": platform.python_version(),
    }


def machine_line(info: dict[str, str]) -> str:
    return (f"{info['cores']} cores ({info['cpu']}), {info['memory']}; PostgreSQL {info['postgresql']}; "
            f"Python {info['python']}; load average {info['load']} when the run started")


def write(results: list[Result], *, machine: dict[str, str], dataset) -> Path:
    text = DOC.read_text() if DOC.exists() else INTRO
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    for result in results:
        start, end = f"<!-- bench:{result.key}:start -->", f"<!-- bench:{result.key}:end -->"
        body = (f"{start}\n## {result.title}\n\n_Last run: {stamp} on {machine_line(machine)}._\n\n"
                f"{result.markdown.strip()}\n{end}")
        if start in text and end in text:
            before, rest = text.split(start, 1)
            _, after = rest.split(end, 1)
            text = before + body + after
        else:
            text = text.rstrip() + "\n\n" + body + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text if text.endswith("\n") else text + "\n")
    return DOC
