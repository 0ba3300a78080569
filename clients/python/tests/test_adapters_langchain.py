"""The LangChain adapter against the real server, driven by LangChain's own scripted chat model.

``GenericFakeChatModel`` answers with the ``AIMessage`` tool calls given to it; a tool-calling
loop runs each call through our tools as LangChain does (``tool.invoke(tool_call)`` gives a
``ToolMessage``) and feeds the results back, until the model answers with text.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import pytest
from conftest import Server
from test_adapters_common import no_internet, own_server  # noqa: F401 - the fixture

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from etlworks_agent import EtlworksAgent
from etlworks_agent.langchain import EtlworksAgentTool, EtlworksToolkit

pytestmark = pytest.mark.usefixtures("no_internet")

COUNT_LOADED = "list schedules; query warehouse sql='select count(*) as n from lc_orders'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server (see own_server)."""
    yield from own_server(tmp_path_factory, "langchain")


@pytest.fixture()
def client(server: Server) -> Iterator[EtlworksAgent]:
    with EtlworksAgent(server.url, api_key=server.admin_key) as agent:
        yield agent


def call(name: str, args: Dict[str, Any], call_id: str) -> Dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def run_agent(model: GenericFakeChatModel, tools: Sequence[BaseTool], prompt: str) -> List[BaseMessage]:
    """LangChain's tool-calling loop: the model's tool calls run through the tools until it answers."""
    by_name = {tool.name: tool for tool in tools}
    messages: List[BaseMessage] = [HumanMessage(prompt)]
    for _ in range(10):
        reply = model.invoke(messages)
        messages.append(reply)
        assert isinstance(reply, AIMessage)
        if not reply.tool_calls:
            return messages
        for tool_call in reply.tool_calls:
            messages.append(by_name[tool_call["name"]].invoke(tool_call))
    raise AssertionError("the scripted model did not finish")


def tool_messages(messages: Sequence[BaseMessage]) -> List[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def test_a_langchain_agent_delegates_three_steps_in_one_session(
    client: EtlworksAgent, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "lc_orders.csv").write_text("id,name,amount\n1,Ann,12.5\n2,Bob,7\n")
    assistant = EtlworksAgentTool(client=client)
    tools = [assistant, *EtlworksToolkit(client=client).get_tools()]
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        call(
                            "etlworks_assistant",
                            {"message": f"create a connection to the folder {inbox} named lc_files"},
                            "call_1",
                        )
                    ],
                ),
                AIMessage(
                    "",
                    tool_calls=[call("etlworks_assistant", {"message": "schedule it every hour"}, "call_2")],
                ),
                AIMessage("", tool_calls=[call("etlworks_assistant", {"message": "run it"}, "call_3")]),
                AIMessage(
                    "",
                    tool_calls=[
                        call(
                            "host_cli",
                            {"command": COUNT_LOADED},
                            "call_4",
                        )
                    ],
                ),
                AIMessage("The CSV folder is loaded into the warehouse every hour."),
            ]
        )
    )

    messages = run_agent(model, tools, "Load the CSV files in my folder into the warehouse every hour.")

    assert messages[-1].content == "The CSV folder is loaded into the warehouse every hour."
    created, scheduled, ran, listed = tool_messages(messages)
    session_id = assistant.session_id
    assert session_id and re.fullmatch(r"ses_[a-z0-9]+", session_id)
    # Each step went to the same session, and the model was told its id.
    for step in (created, scheduled, ran):
        assert step.status == "success", step.content
        assert step.artifact["session_id"] == session_id
        assert f"session_id: {session_id}" in step.content
    assert "Created connection 'lc_files' (file)" in created.content
    assert "tools used: host_cli" in created.content
    # "it" was the connection of the first step: the session carried the context over.
    assert "'lc_files' is a connection" in scheduled.content
    assert "Flow 'lc_files_to_warehouse' now runs every 1h" in scheduled.content
    assert re.search(
        r"Run \w+ of flow 'lc_files_to_warehouse' succeeded: 2 rows read, 2 rows written", ran.content
    )
    # The toolkit's host_cli saw what the agent made, straight from the engine.
    assert listed.tool_call_id == "call_4" and listed.status == "success"
    assert re.search(r"lc_files_to_warehouse\s+every 1h\s+yes", listed.content), listed.content
    assert listed.artifact["data"]["results"][1]["ok"] is True
    assert "2" in listed.content.split("> query warehouse", 1)[1]

    # The server kept all three turns in that one session.
    history = client.session_messages(session_id)["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        f"create a connection to the folder {inbox} named lc_files",
        "schedule it every hour",
        "run it",
    ]
    assert client.get_session(session_id)["session"]["title"] == "LangChain delegation"


def test_a_session_id_is_handed_over_and_an_unknown_one_is_reported_to_the_model(
    client: EtlworksAgent,
) -> None:
    first = EtlworksAgentTool(client=client)
    answer = first.invoke(
        call("etlworks_assistant", {"message": "create a connection to the folder /tmp named lc_tmp"}, "c1")
    )
    session_id = first.session_id
    assert isinstance(answer, ToolMessage) and answer.artifact["session_id"] == session_id

    # Another tool (another agent of the crew, say) is handed the session id and goes on with it.
    second = EtlworksAgentTool(client=client, session_id=session_id)
    follow = second.invoke({"message": "describe it"})
    assert "lc_tmp" in follow and f"session_id: {session_id}" in follow
    # ... or the model passes the id as an argument to a tool that has a session of its own.
    third = EtlworksAgentTool(client=client)
    again = third.invoke(
        call("etlworks_assistant", {"message": "describe it", "session_id": session_id}, "c2")
    )
    assert again.artifact["session_id"] == session_id and third.session_id == session_id
    user_turns = [m for m in client.session_messages(session_id)["messages"] if m["role"] == "user"]
    assert len(user_turns) == 3

    unknown = EtlworksAgentTool(client=client).invoke(
        call("etlworks_assistant", {"message": "describe it", "session_id": "ses_nope"}, "c3")
    )
    assert unknown.status == "error"
    assert (
        "session" in unknown.content and "without session_id to start a new conversation" in unknown.content
    )

    # keep_session=False: each call is a one-shot chat without memory.
    one_shot = EtlworksAgentTool(client=client, keep_session=False)
    text = one_shot.invoke({"message": "list connections"})
    assert "lc_tmp" in text and "session_id" not in text and one_shot.session_id is None

    with pytest.raises(ValueError, match="session_id must be a session id"):
        EtlworksAgentTool(client=client, session_id="  ")


def test_the_toolkit_offers_each_server_tool_with_its_schema(client: EtlworksAgent) -> None:
    catalogue = {tool["name"]: tool for tool in client.list_tools()["tools"]}
    tools = EtlworksToolkit(client=client).get_tools()
    assert [tool.name for tool in tools] == list(catalogue)
    for tool in tools:
        # What a real model is sent for the tool is exactly the server's schema.
        spec = convert_to_openai_tool(tool)["function"]
        assert spec["name"] == tool.name
        assert spec["description"] == catalogue[tool.name]["description"]
        assert spec["parameters"] == catalogue[tool.name]["parameters"]
        assert tool.metadata == {"agentic": catalogue[tool.name]["agentic"]}

    read_only = EtlworksToolkit(client=client, read_only=True).get_tools()
    assert {tool.name for tool in read_only} == {n for n, t in catalogue.items() if not t["agentic"]}
    assert "host_cli" not in {tool.name for tool in read_only}
    assert [
        t.name for t in EtlworksToolkit(client=client, tools=["host_cli", "search_templates"]).get_tools()
    ] == [
        "host_cli",
        "search_templates",
    ]
    with pytest.raises(ValueError, match=r"unknown tool 'run_sql'; the server offers diagnose_flow, "):
        EtlworksToolkit(client=client, tools=["run_sql"]).get_tools()


def test_toolkit_tools_called_by_the_model_answer_results_and_errors(client: EtlworksAgent) -> None:
    tools = EtlworksToolkit(client=client).get_tools()
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        call("search_knowledge_base", {"query": "merge keys", "limit": 2}, "k1"),
                        call("get_connector_info", {}, "k2"),
                        call("host_cli", {}, "k3"),
                        call("host_cli", {"command": "run flow lc_nightly --wait"}, "k4"),
                    ],
                ),
                AIMessage("done"),
            ]
        )
    )
    kb, connectors, missing, failed = tool_messages(run_agent(model, tools, "look around"))
    assert kb.status == "success" and "merge" in kb.content.lower()
    assert kb.artifact["data"]["count"] == 2
    # An optional argument left out is not sent: the server's default applies.
    assert connectors.status == "success" and "postgres" in connectors.content
    # Arguments that do not fit the schema: the server's message goes back to the model.
    assert missing.status == "error" and "command" in missing.content
    # A tool that ran and failed: an error result whose text says why.
    assert failed.status == "error"
    assert failed.content.startswith("The tool failed: ") and "unknown flow 'lc_nightly'" in failed.content


def test_a_read_only_key_is_refused_host_cli_and_the_model_is_told(server: Server) -> None:
    with EtlworksAgent(server.url, api_key=server.keys["readonly"]) as readonly:
        host_cli = EtlworksToolkit(client=readonly, tools=["host_cli"]).get_tools()[0]
        refused = host_cli.invoke(call("host_cli", {"command": "list connections"}, "r1"))
    assert refused.status == "error"
    assert "host_cli" in refused.content and "read" in refused.content.lower()


def test_the_tools_run_asynchronously_too(client: EtlworksAgent) -> None:
    assistant = EtlworksAgentTool(client=client)
    host_cli = EtlworksToolkit(client=client, tools=["host_cli"]).get_tools()[0]

    async def both() -> List[Any]:
        return list(
            await asyncio.gather(
                assistant.ainvoke(call("etlworks_assistant", {"message": "list connections"}, "a1")),
                host_cli.ainvoke(call("host_cli", {"command": "list connections"}, "a2")),
            )
        )

    talked, listed = asyncio.run(both())
    assert talked.artifact["session_id"] == assistant.session_id
    assert "warehouse" in talked.content and "warehouse" in listed.content


def test_the_client_comes_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLWORKS_URL", server.url)
    monkeypatch.setenv("ETLWORKS_API_KEY", server.admin_key)
    assert EtlworksAgentTool().client.base_url == server.url
    assert len(EtlworksToolkit().get_tools()) == 7
    with pytest.raises(TypeError, match="client must be an etlworks_agent.EtlworksAgent"):
        EtlworksAgentTool(client="http://127.0.0.1:8080")  # type: ignore[arg-type]
    monkeypatch.delenv("ETLWORKS_URL")
    with pytest.raises(ValueError, match="ETLWORKS_URL is not set"):
        EtlworksToolkit().get_tools()
