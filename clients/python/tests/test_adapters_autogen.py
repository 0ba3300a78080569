"""The AutoGen adapter against the real server: an ``AssistantAgent`` whose model is AutoGen's own
``ReplayChatCompletionClient`` (autogen-ext), replaying function calls to our tools."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Union

import pytest
from conftest import Server
from test_adapters_common import no_internet, own_server  # noqa: F401 - the fixture

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from etlworks_agent import EtlworksAgent
from etlworks_agent.autogen import EtlworksAgentTool, etlworks_tools

pytestmark = pytest.mark.usefixtures("no_internet")

TOOL_MODEL = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def calls(*items: Dict[str, Any]) -> CreateResult:
    """A model turn that calls tools: ``calls({"name": ..., "args": {...}}, ...)``."""
    return CreateResult(
        finish_reason="function_calls",
        content=[
            FunctionCall(
                id=f"call_{index}_{item['name']}", name=item["name"], arguments=json.dumps(item["args"])
            )
            for index, item in enumerate(items)
        ],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


def assistant(tools: Sequence[Any], script: List[Union[str, CreateResult]]) -> AssistantAgent:
    return AssistantAgent(
        "engineer",
        model_client=ReplayChatCompletionClient(script, model_info=TOOL_MODEL),
        tools=list(tools),
        max_tool_iterations=len(script),
    )


def results(task: TaskResult) -> List[Any]:
    """Each tool call's result, in order (``FunctionExecutionResult``)."""
    return [result for m in task.messages if isinstance(m, ToolCallExecutionEvent) for result in m.content]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server (see own_server)."""
    yield from own_server(tmp_path_factory, "autogen")


@pytest.fixture()
def client(server: Server) -> Iterator[EtlworksAgent]:
    with EtlworksAgent(server.url, api_key=server.admin_key) as agent:
        yield agent


def test_an_assistant_agent_delegates_three_steps_in_one_session(
    client: EtlworksAgent, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "ag_orders.csv").write_text("id,name\n1,Ann\n2,Bob\n3,Cy\n4,Di\n")
    delegate = EtlworksAgentTool(client)
    agent = assistant(
        [delegate, *etlworks_tools(client, ["host_cli"])],
        [
            calls({"name": "etlworks_assistant", "args": {"message": f"connect to {inbox} named ag_files"}}),
            calls({"name": "etlworks_assistant", "args": {"message": "schedule it every hour"}}),
            calls({"name": "etlworks_assistant", "args": {"message": "run it"}}),
            calls({"name": "host_cli", "args": {"command": "list schedules; list runs"}}),
            "ag_files is loaded every hour. TERMINATE",
        ],
    )

    task = asyncio.run(agent.run(task="Load my inbox folder into the warehouse every hour."))

    assert task.messages[-1].to_text() == "ag_files is loaded every hour. TERMINATE"
    created, scheduled, ran, listed = results(task)
    assert not any(r.is_error for r in (created, scheduled, ran, listed)), results(task)
    session_id = delegate.session_id
    assert session_id and re.fullmatch(r"ses_[a-z0-9]+", session_id)
    for step in (created, scheduled, ran):
        assert f"session_id: {session_id}" in step.content
    assert "Created connection 'ag_files' (file)" in created.content
    assert "Flow 'ag_files_to_warehouse' now runs every 1h" in scheduled.content
    assert re.search(r"of flow 'ag_files_to_warehouse' succeeded: 4 rows read, 4 rows written", ran.content)
    assert re.search(r"ag_files_to_warehouse\s+every 1h\s+yes", listed.content), listed.content
    assert "ag_files_to_warehouse" in listed.content.split("> list runs", 1)[1]
    user_turns = [
        m["content"] for m in client.session_messages(session_id)["messages"] if m["role"] == "user"
    ]
    assert user_turns == [f"connect to {inbox} named ag_files", "schedule it every hour", "run it"]
    assert client.get_session(session_id)["session"]["title"] == "AutoGen delegation"


def test_the_session_id_passed_by_the_model_wins_and_failures_are_error_results(
    client: EtlworksAgent,
) -> None:
    first = EtlworksAgentTool(client)
    opened = asyncio.run(
        first.run_json(
            {"message": "create a connection to the folder /tmp named ag_tmp"}, CancellationToken()
        )
    )
    session_id = first.session_id
    assert f"session_id: {session_id}" in first.return_value_as_string(opened)

    other = EtlworksAgentTool(client)
    agent = assistant(
        [other, *etlworks_tools(client)],
        [
            calls(
                {"name": "etlworks_assistant", "args": {"message": "describe it", "session_id": session_id}},
                {"name": "etlworks_assistant", "args": {"message": "hello", "session_id": "ses_nope"}},
                {"name": "search_knowledge_base", "args": {"query": "merge keys", "limit": 0}},
                {"name": "host_cli", "args": {"command": "run flow ag_nightly --wait"}},
                {"name": "get_connector_info", "args": {"type": "postgres"}},
            ),
            "done",
        ],
    )
    described, unknown, invalid, failed, info = results(asyncio.run(agent.run(task="go")))
    assert not described.is_error and "ag_tmp" in described.content
    assert f"session_id: {session_id}" in described.content
    assert unknown.is_error and "start a new conversation" in unknown.content
    assert invalid.is_error and "limit" in invalid.content
    assert (
        failed.is_error and "unknown flow 'ag_nightly'" in failed.content and "tool_failed" in failed.content
    )
    assert not info.is_error and "password" in info.content
    # The tool adopted the session the model named: later calls go on with it.
    assert other.session_id == session_id


def test_the_server_tools_as_function_tools(client: EtlworksAgent, server: Server) -> None:
    catalogue = {tool["name"]: tool for tool in client.list_tools()["tools"]}
    tools = etlworks_tools(client)
    assert all(isinstance(tool, FunctionTool) for tool in tools)
    assert [tool.name for tool in tools] == list(catalogue)
    for tool in tools:
        schema = tool.schema
        server_schema = catalogue[tool.name]["parameters"]
        assert schema["description"] == catalogue[tool.name]["description"]
        parameters = schema.get("parameters", {"properties": {}})
        assert set(parameters["properties"]) == set(server_schema["properties"])
        assert sorted(parameters.get("required", [])) == sorted(server_schema.get("required", []))
        for name, prop in server_schema["properties"].items():
            assert parameters["properties"][name]["description"] == prop["description"]
    assert {t.name for t in etlworks_tools(client, read_only=True)} == {
        name for name, tool in catalogue.items() if not tool["agentic"]
    }
    with pytest.raises(ValueError, match="unknown tool 'run_sql'"):
        etlworks_tools(client, ["run_sql"])

    kb = next(tool for tool in tools if tool.name == "search_knowledge_base")
    found = asyncio.run(kb.run_json({"query": "merge keys", "limit": 1}, CancellationToken()))
    assert "merge" in kb.return_value_as_string(found).lower()

    with EtlworksAgent(server.url, api_key=server.keys["readonly"]) as readonly:
        host_cli = etlworks_tools(readonly, ["host_cli"])[0]
        agent = assistant(
            [host_cli], [calls({"name": "host_cli", "args": {"command": "list connections"}}), "ok"]
        )
        (refused,) = results(asyncio.run(agent.run(task="list")))
    assert refused.is_error and "host_cli" in refused.content


def test_the_assistant_tool_schema(client: EtlworksAgent) -> None:
    schema = EtlworksAgentTool(client).schema
    assert schema["name"] == "etlworks_assistant"
    assert schema["parameters"]["required"] == ["message"]
    assert "session_id" in schema["parameters"]["properties"]
    one_shot = EtlworksAgentTool(client, keep_session=False)
    answer = asyncio.run(one_shot.run_json({"message": "list connections"}, CancellationToken()))
    assert "session_id" not in one_shot.return_value_as_string(answer) and one_shot.session_id is None
