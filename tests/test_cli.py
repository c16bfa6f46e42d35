"""The ``chatrelay`` command, run as users run it: a separate process."""

from __future__ import annotations

import subprocess
import sys

from chatrelay import __version__


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatrelay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_walks_through_a_conversation() -> None:
    result = run("demo", "--typing-timeout", "0.05")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    received = [line.split()[2] for line in lines if line.startswith("  ") and " <- " in line]
    assert received == [
        "user:online",
        "(ack)",
        "(ack)",
        "(ack)",
        "typing:start",
        "typing:stop",
        "message:received",
        "message:received",
        "message:status",
        "user:offline",
    ]
    assert '"members":["alice","bob"]' in result.stdout
    assert "Traceback" not in result.stderr


def test_bad_options_exit_with_status_2() -> None:
    result = run("demo", "--typing-timeout", "0")
    assert result.returncode == 2
    assert "--typing-timeout must be > 0" in result.stderr
    assert run("no-such-command").returncode == 2
    assert run().returncode == 2


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chatrelay {__version__}"
