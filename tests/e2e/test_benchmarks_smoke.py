"""The benchmark harness, run with tiny numbers so that it cannot rot.

Speed is measured by the benchmarks only, as ratios in one run (docs/benchmarks.md);
nothing here judges a figure, only that every figure is reported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ["chatrelay-websocket", "starlette", "chatrelay-socketio", "socketio", "node-socketio"]
FANOUT = ["fanout_rate", "fanout_p50", "fanout_p99", "fanout_load_cpu"]
ROOMS = ["rooms_rate", "rooms_p50", "rooms_p99", "rooms_load_cpu", "idle_kib", "idle_cpu"]
# (d): two chatrelay servers sharing a Redis that the harness starts, if it can.
CLUSTER = "chatrelay-websocket-redis"
HAS_REDIS = shutil.which("redis-server") is not None


def test_the_harness_reports_every_figure_of_every_server(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    table = tmp_path / "results.md"
    command = [sys.executable, "benchmarks/run.py", "--smoke", "--json", str(out)]
    command += ["--markdown", str(table), "--logs", str(tmp_path / "logs")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    results: dict[str, Any] = json.loads(out.read_text())
    medians = results["medians"]
    # Compression off: every scenario; on: the fan-out (the default plan).
    assert set(medians) == {"off", "on"}
    assert set(medians["off"]) == set(SERVERS) | ({CLUSTER} if HAS_REDIS else set())
    assert set(medians["on"]) == set(SERVERS)
    for mode, figures in (("off", FANOUT + ROOMS), ("on", FANOUT)):
        for server in medians[mode]:
            expected = [*FANOUT, "fanout_remote_p99"] if server == CLUSTER else figures
            if server != "node-socketio":  # the Python servers time their collections
                gc = [rate.replace("_rate", "_gc") for rate in expected if rate.endswith("_rate")]
                expected = [*expected, *gc]
            assert sorted(medians[mode][server]) == sorted(expected), (mode, server)
            for value in medians[mode][server].values():
                assert isinstance(value, int | float)
                assert value >= 0
    pairs = results["ratios"]["off"]
    assert set(pairs) == {
        "chatrelay-websocket / starlette",
        "chatrelay-websocket / node-socketio",
        "chatrelay-socketio / socketio",
        "chatrelay-socketio / node-socketio",
    } | ({f"{CLUSTER} / chatrelay-websocket"} if HAS_REDIS else set())
    assert "fanout_rate" in pairs["chatrelay-socketio / socketio"]
    assert results["targets"]["off"], "the targets are checked"
    assert results["environment"]["packages"]["npm:socket.io"]
    assert "| (a) fan-out, 1 room: deliveries per server-CPU-second" in table.read_text()
