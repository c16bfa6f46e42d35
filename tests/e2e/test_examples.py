"""The examples are part of the documentation: run them so they cannot drift."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_quickstart_prints_the_delivered_message(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    assert capsys.readouterr().out == "message:received {'text': 'Hi Bob!'}\n"


def test_readme_shows_the_quickstart_unchanged() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert shown is not None
    program = (EXAMPLES / "quickstart.py").read_text()
    assert program.endswith(shown.group(1))


def test_tutorial_runs_every_step() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "tutorial.py"))
    seen = anyio.run(namespace["main"])
    assert seen == [
        "user:online",
        "members=alice,bob",
        "typing:start",
        "typing:stop",
        "message:received",
        "invalid_payload",
        "user:offline",
    ]


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


def test_the_rolling_deploy_example_drains_through_its_pre_stop_endpoint() -> None:
    from starlette.testclient import TestClient

    namespace = runpy.run_path(str(EXAMPLES / "rolling_deploy.py"))
    with TestClient(namespace["app"]) as client:
        assert client.get("/healthz").status_code == 200
        sockets = [client.websocket_connect(f"/ws?userId=u{n}") for n in range(3)]
        sessions = [socket.__enter__() for socket in sockets]
        try:
            assert client.post("/internal/drain?window=0.3").json() == {"status": "drained"}
            health = client.get("/healthz")
            assert (health.status_code, health.json()) == (503, {"status": "draining"})
            for session in sessions:
                frames = []
                for _ in range(10):  # presence events, then the drain's, then the close
                    message = session.receive()
                    if message["type"] == "websocket.close":
                        break
                    frames.append(message["text"])
                assert any('"event":"server:draining"' in f for f in frames), frames
                assert (message["code"], message.get("reason")) == (1012, "server_restart")
        finally:
            for socket in sockets:
                socket.__exit__(None, None, None)
