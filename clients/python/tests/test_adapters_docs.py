"""The docs' framework pages (docs/frameworks/*.md) run as printed: every Python block of a page,
against a real server of its own, with OPENAI_BASE_URL pointing the frameworks' OpenAI model
integrations at a scripted OpenAI-compatible model on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List

import pytest
from conftest import REPO, Server, start_server
from test_adapters_common import (  # noqa: F401 - no_internet is a fixture
    ScriptedModel,
    delegating_model,
    no_internet,
)

from etlworks_agent import EtlworksAgent

pytestmark = [
    pytest.mark.usefixtures("no_internet"),
    # CrewAI warns about its own deprecated fields while it builds an Agent and a Crew.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # autogen-ext compares the model name it asked for with the scripted model's answer.
    pytest.mark.filterwarnings("ignore:Resolved model mismatch"),
]

PAGES = REPO / "docs" / "frameworks"


def python_blocks(page: Path) -> List[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.fixture()
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("docs-server"), "--rate-limit", "0")
    try:
        yield running
    finally:
        running.stop()


def test_each_framework_has_a_page_with_runnable_examples() -> None:
    assert sorted(p.name for p in PAGES.glob("*.md")) == ["autogen.md", "crewai.md", "langchain.md"]
    for page in PAGES.glob("*.md"):
        text = page.read_text()
        assert len(python_blocks(page)) >= 2, page
        assert f"pip install './clients/python[{page.stem}]'" in text, page
        assert "OPENAI_BASE_URL" in text and "etlworks_assistant" in text


@pytest.mark.parametrize("framework", ["langchain", "crewai", "autogen"])
def test_the_page_runs_as_printed(
    framework: str,
    page_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = ScriptedModel([delegating_model("delegated_inbox")] * 4)
    monkeypatch.setenv("ETLWORKS_URL", page_server.url)
    monkeypatch.setenv("ETLWORKS_API_KEY", page_server.admin_key)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-scripted")
    monkeypatch.setenv("OPENAI_BASE_URL", model.url)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    # CrewAI writes under $HOME; the examples make their folders with tempfile.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    outputs = []
    try:
        for number, block in enumerate(python_blocks(PAGES / f"{framework}.md"), 1):
            exec(
                compile(block, f"docs/frameworks/{framework}.md block {number}", "exec"),
                {"__name__": "__main__"},
            )
            outputs.append(capsys.readouterr().out)
    finally:
        model.close()

    assert model.errors == []
    # The block without a model: three steps in one session, each answer naming it.
    direct = outputs[0]
    assert "Created connection '" in direct and "(file) with directory=" + str(tmp_path) in direct
    sessions = set(re.findall(r"session_id: (ses_[a-z0-9]+)", direct))
    assert len(sessions) == 1, direct
    # The agent example: the framework's own model integration called our tool three times,
    # passing the session on, and the data was loaded.
    agent_output = outputs[1]
    assert len(model.requests) == 4, [r["messages"][-1] for r in model.requests]
    offered = {tool["function"]["name"] for tool in model.requests[0]["tools"]}
    assert "etlworks_assistant" in offered and "search_knowledge_base" in offered
    assert "host_cli" not in offered  # the examples offer the read-only server tools only
    assert (
        "DONE: Run " in agent_output
        and "of flow 'delegated_inbox_to_warehouse' succeeded: 2 rows" in agent_output
    )
    with EtlworksAgent(page_server.url, api_key=page_server.admin_key) as client:
        schedules = client.execute_tool("host_cli", {"command": "list schedules"})["result"]
        assert re.search(r"delegated_inbox_to_warehouse\s+every 1h\s+yes", schedules), schedules
        delegated = [
            s for s in client.list_sessions()["sessions"] if s["message_count"] and s["id"] not in sessions
        ]
        assert len(delegated) == 1, delegated  # the agent example's three calls: one session
    for later in outputs[2:]:
        assert later.strip(), "a block printed nothing"
