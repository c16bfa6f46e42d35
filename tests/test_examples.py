"""The examples are part of the documentation: run them so they cannot drift."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_delivers_the_message() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    data = anyio.run(namespace["main"])
    assert data["conversationId"] == "c1"
    assert data["message"]["content"] == {"text": "Hi Bob!"}  # type: ignore[index]
    assert data["sender"] == {"id": "alice"}


def test_the_example_test_suite_passes() -> None:
    # Run it as a user would: its own pytest process, the example directory on the path.
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat_service.py"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
