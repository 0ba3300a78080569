"""The CrewAI adapter against the real server: a real Crew whose LLM is a scripted
OpenAI-compatible server on 127.0.0.1.

CrewAI's own OpenAI provider talks to the scripted server as it would to OpenAI (Chat
Completions with function calling). The script reads each request, as a model would read its
context, and answers with the next tool call: the session id it passes on in the second step is
the one our tool's first answer told it.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest
from conftest import Server
from test_adapters_common import (  # noqa: F401 - no_internet is a fixture
    JSON,
    ScriptedModel,
    last_tool_result,
    no_internet,
    own_server,
    tool_call,
)

from etlworks_agent import EtlworksAgent

# CrewAI writes settings, a credentials key and its task outputs under $HOME when it is imported
# and run: it gets a home of its own here, so the tests leave nothing in the user's.
CREWAI_HOME = tempfile.mkdtemp(prefix="etlworks-crewai-home-")
atexit.register(shutil.rmtree, CREWAI_HOME, True)
_USER_HOME = os.environ.get("HOME")
os.environ["HOME"] = CREWAI_HOME
try:
    from crewai import LLM, Agent, Crew, Process, Task
    from crewai.tools.tool_failure import ToolFailure

    from etlworks_agent.crewai import EtlworksAgentTool, EtlworksServerTool, etlworks_tools
finally:
    if _USER_HOME is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = _USER_HOME

pytestmark = [
    pytest.mark.usefixtures("no_internet"),
    # CrewAI warns about its own deprecated fields while it builds an Agent and a Crew.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def crewai_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", CREWAI_HOME)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server (see own_server)."""
    yield from own_server(tmp_path_factory, "crewai")


@pytest.fixture()
def client(server: Server) -> Iterator[EtlworksAgent]:
    with EtlworksAgent(server.url, api_key=server.admin_key) as agent:
        yield agent


def scripted_crew(model: ScriptedModel, tools: List[Any], task: str) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=model.url, api_key="sk-scripted", temperature=0)
    engineer = Agent(
        role="Data engineer",
        goal="Get the data where it is needed",
        backstory="You delegate data-integration work to the Etlworks agent.",
        tools=tools,
        llm=llm,
        allow_delegation=False,
        max_iter=6,
        verbose=False,
    )
    work = Task(description=task, expected_output="What was set up.", agent=engineer)
    return Crew(agents=[engineer], tasks=[work], process=Process.sequential, verbose=False)


def test_a_crew_delegates_to_the_agent_and_passes_its_session_on(
    client: EtlworksAgent, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "crew_orders.csv").write_text("id,name\n1,Ann\n2,Bob\n3,Cy\n")
    seen_sessions: List[Optional[str]] = []

    def second_step(body: JSON) -> JSON:
        # The model reads the session id from our tool's first answer and passes it on.
        found = re.search(r"session_id: (ses_[a-z0-9]+)", last_tool_result(body))
        seen_sessions.append(found.group(1) if found else None)
        args = {
            "message": "schedule it every hour and run it",
            "session_id": found.group(1) if found else None,
        }
        return tool_call("etlworks_assistant", args, "call_2")

    model = ScriptedModel(
        [
            lambda body: tool_call(
                "etlworks_assistant",
                {"message": f"create a connection to the folder {inbox} named crew_files"},
                "call_1",
            ),
            second_step,
            lambda body: tool_call("host_cli", {"command": "list schedules"}, "call_3"),
            lambda body: {"role": "assistant", "content": "crew_files is loaded into the warehouse hourly."},
        ]
    )
    assistant = EtlworksAgentTool(client=client)
    try:
        crew = scripted_crew(
            model,
            [assistant, *etlworks_tools(client, ["host_cli"])],
            "Load the CSV files of the inbox folder into the warehouse every hour.",
        )
        output = crew.kickoff()
    finally:
        model.close()

    assert model.errors == []
    assert str(output) == "crew_files is loaded into the warehouse hourly."
    assert len(model.requests) == 4
    # CrewAI offered our tools to the model with their schemas.
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert set(offered) == {"etlworks_assistant", "host_cli"}
    assistant_args = offered["etlworks_assistant"]["parameters"]["properties"]
    assert assistant_args["message"]["type"] == "string"
    # CrewAI sends strict schemas: every property listed as required, an optional one nullable.
    assert {"type": "null"} in assistant_args["session_id"]["anyOf"]
    assert offered["host_cli"]["parameters"]["properties"]["command"]["type"] == "string"
    # The model was told the session id and passed it back: one session holds both steps.
    session_id = assistant.session_id
    assert seen_sessions == [session_id] and session_id is not None
    first = last_tool_result(model.requests[1])
    assert "Created connection 'crew_files' (file)" in first
    second = last_tool_result(model.requests[2])
    assert "Flow 'crew_files_to_warehouse' now runs every 1h" in second, second
    assert f"session_id: {session_id}" in second
    listed = last_tool_result(model.requests[3])
    assert re.search(r"crew_files_to_warehouse\s+every 1h\s+yes", listed), listed
    user_turns = [
        m["content"] for m in client.session_messages(session_id)["messages"] if m["role"] == "user"
    ]
    assert user_turns == [
        f"create a connection to the folder {inbox} named crew_files",
        "schedule it every hour and run it",
    ]
    assert client.get_session(session_id)["session"]["title"] == "CrewAI delegation"


def test_the_server_tools_as_crewai_tools(client: EtlworksAgent) -> None:
    catalogue = {tool["name"]: tool for tool in client.list_tools()["tools"]}
    tools = etlworks_tools(client)
    assert [tool.name for tool in tools] == list(catalogue)
    for tool in tools:
        assert isinstance(tool, EtlworksServerTool)
        assert tool.agentic == catalogue[tool.name]["agentic"]
        schema = tool.args_schema.model_json_schema()
        server_schema = catalogue[tool.name]["parameters"]
        assert set(schema.get("properties", {})) == set(server_schema["properties"])
        assert sorted(schema.get("required", [])) == sorted(server_schema.get("required", []))
    assert {t.name for t in etlworks_tools(client, read_only=True)} == {
        name for name, tool in catalogue.items() if not tool["agentic"]
    }
    with pytest.raises(ValueError, match="unknown tool 'run_sql'"):
        etlworks_tools(client, ["run_sql"])

    by_name = {tool.name: tool for tool in tools}
    kb = by_name["search_knowledge_base"].run(query="merge keys", limit=1)
    assert isinstance(kb, str) and "merge" in kb.lower()
    # Limits of the server's schema hold before anything is sent.
    with pytest.raises(ValueError, match="arguments validation failed"):
        by_name["search_knowledge_base"].run(query="merge keys", limit=0)
    failed = by_name["host_cli"].run(command="run flow crew_nightly --wait")
    assert isinstance(failed, ToolFailure) and failed.code == "tool_failed"
    assert "unknown flow 'crew_nightly'" in failed.message


def test_the_assistant_tool_keeps_or_takes_a_session(client: EtlworksAgent, server: Server) -> None:
    assistant = EtlworksAgentTool(client=client)
    first = assistant.run(message="create a connection to the folder /tmp named crew_tmp")
    assert isinstance(first, str) and f"session_id: {assistant.session_id}" in first
    follow = assistant.run(message="describe it")
    assert "crew_tmp" in follow
    handed = EtlworksAgentTool(client=client, session_id=assistant.session_id)
    assert f"session_id: {assistant.session_id}" in handed.run(message="describe it")

    unknown = EtlworksAgentTool(client=client).run(message="hello", session_id="ses_nope")
    assert isinstance(unknown, ToolFailure) and unknown.code == "session_not_found"
    assert "without session_id to start a new conversation" in unknown.message

    with EtlworksAgent(server.url, api_key=server.keys["readonly"]) as readonly:
        refused = etlworks_tools(readonly, ["host_cli"])[0].run(command="list connections")
    assert isinstance(refused, ToolFailure) and "host_cli" in refused.message
