"""The "Operating chatrelay" topic says what the code does.

Every logger the package creates is in its table, its ``logging`` configuration
works, and every metric of its table is one that a scrape gives (and the other way
round).
"""

from __future__ import annotations

import ast
import logging.config
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatrelay import Relay
from chatrelay.metrics import instrument

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "topics" / "operating.md").read_text()


def table_names(heading: str) -> set[str]:
    """The first column of the first table after ``heading``, without backquotes."""
    section = DOC.split(heading, 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \|", section.split("\n## ", 1)[0], flags=re.M)
    return set(rows)


def source_loggers() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "chatrelay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("getLogger", "QuietLibraryLog")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def test_every_logger_of_the_package_is_listed() -> None:
    loggers = source_loggers()
    assert "chatrelay.redis" in loggers  # the scan finds them
    assert loggers == table_names("## Logging")


def test_the_logging_configuration_works(caplog: pytest.LogCaptureFixture) -> None:
    snippet = DOC.split("LOGGING = ", 1)[1].split("\n```", 1)[0]
    config: dict[str, Any] = ast.literal_eval(snippet)
    try:
        logging.config.dictConfig(config)
        chatrelay = logging.getLogger("chatrelay")
        assert chatrelay.level == logging.WARNING
        assert not chatrelay.propagate
        assert [type(h) for h in chatrelay.handlers] == [logging.StreamHandler]
    finally:
        chatrelay = logging.getLogger("chatrelay")
        chatrelay.handlers.clear()
        chatrelay.propagate = True
        chatrelay.setLevel(logging.NOTSET)
        logging.getLogger("uvicorn.access").setLevel(logging.NOTSET)


@pytest.mark.anyio
async def test_the_metric_table_is_what_a_scrape_gives() -> None:
    registry = CollectorRegistry()
    async with Relay() as relay:
        instrument(relay, registry)
        text = generate_latest(registry).decode()
    scraped = set()
    for family in text_string_to_metric_families(text):
        kind = "counter" if family.type == "counter" else None
        scraped.add(f"{family.name}_total" if kind else family.name)
    assert table_names("## Metrics") == scraped
