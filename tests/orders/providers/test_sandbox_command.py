"""`manage.py sandbox_provider` runs as its own process and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
from django.conf import settings

from .conftest import SECRET


def test_command_serves_and_stops_on_sigterm() -> None:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "DEBUG": "1", "SANDBOX_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "sandbox_provider",
            "--port",
            "0",
            "--seed",
            "1",
            "--pending-seconds",
            "0",
            "--decline-rate",
            "1",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        control = httpx.get(f"{base}/v1/control").json()
        assert control["knobs"]["decline_rate"] == 1.0 and control["knobs"]["seed"] == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "stopping" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
