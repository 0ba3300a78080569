"""The official MCP Python SDK (`mcp` on PyPI) against the real server's MCP endpoint:
initialize, list the tools, call each of them, delegate to etlworks_assistant with progress,
cancel a running assistant, and the 404 that makes a client re-initialise after its session
is deleted."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import Server, SlowApi

READ_ONLY_TOOLS = {
    "search_knowledge_base",
    "host_list_commands",
    "search_templates",
    "get_connector_info",
    "diagnose_flow",
}
AGENTIC_TOOLS = {"host_cli", "import_template"}


class Connection:
    """An initialised SDK session plus the MCP session id the server gave it."""

    def __init__(self, session: ClientSession, ids: List[str], http: httpx2.AsyncClient) -> None:
        self.session = session
        self._ids = ids
        self.http = http

    @property
    def session_id(self) -> str:
        assert self._ids, "the server sent no Mcp-Session-Id"
        return self._ids[-1]


@asynccontextmanager
async def connect(server: Server, key: Optional[str] = None) -> AsyncIterator[Connection]:
    ids: List[str] = []

    async def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            ids.append(response.headers["mcp-session-id"])

    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key or server.admin_key}"},
        timeout=httpx2.Timeout(30.0, read=120.0),
        event_hooks={"response": [remember]},
    ) as http:
        async with streamable_http_client(server.mcp_url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield Connection(session, ids, http)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def test_initialize_negotiates_the_newest_version_and_describes_the_server(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server) as conn:
            result = conn.session.initialize_result
            assert result is not None
            assert result.protocol_version == "2025-11-25"
            assert result.server_info.name == "etlworks-agent"
            assert result.capabilities.tools is not None
            assert "etlworks_assistant" in (result.instructions or "")
            assert conn.session_id

    run(scenario())


def test_tools_are_listed_with_their_schemas_and_hints(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server) as conn:
            listed = await conn.session.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        rest = server.api("GET", "/tools")
        assert set(tools) == {t["name"] for t in rest["tools"]} | {"etlworks_assistant"}
        for spec in rest["tools"]:
            tool = tools[spec["name"]]
            assert tool.input_schema == spec["parameters"], spec["name"]
            assert tool.description == spec["description"]
            hints = tool.annotations
            assert hints is not None and hints.title
            assert hints.read_only_hint is (not spec["agentic"]), spec["name"]
        assert {n for n, s in tools.items() if s.annotations and s.annotations.read_only_hint} == READ_ONLY_TOOLS
        assert tools["host_cli"].annotations.destructive_hint is True
        assert tools["import_template"].annotations.destructive_hint is False
        assistant = tools["etlworks_assistant"]
        assert assistant.input_schema["required"] == ["message"]
        assert set(assistant.input_schema["properties"]) == {"message", "session_id"}
        assert assistant.annotations.destructive_hint is True

    run(scenario())


def test_each_tool_answers_through_mcp(server: Server, tmp_path: Path) -> None:
    async def scenario() -> Dict[str, types.CallToolResult]:
        async with connect(server) as conn:
            call = conn.session.call_tool
            results = {
                "search_knowledge_base": await call("search_knowledge_base", {"query": "schedule a flow", "limit": 3}),
                "host_list_commands": await call("host_list_commands", {}),
                "host_cli": await call("host_cli", {"command": "list connections"}),
                "search_templates": await call("search_templates", {"query": "csv files to warehouse"}),
                "get_connector_info": await call("get_connector_info", {"type": "postgres"}),
                "diagnose_flow": await call("diagnose_flow", {"flow": "no_such_flow"}),
            }
            template = results["search_templates"].structured_content["data"]["results"][0]["id"]
            results["import_template"] = await call(
                "import_template",
                {"template": template, "name": "mcp_import", "parameters": {"directory": str(tmp_path)}},
            )
            return results

    results = run(scenario())
    for name, result in results.items():
        structured = result.structured_content
        assert structured is not None and structured["tool"] == name, name
        assert text_of(result) == structured["result"], name
    for name in ("search_knowledge_base", "host_list_commands", "host_cli", "search_templates", "get_connector_info"):
        assert results[name].is_error is not True, (name, text_of(results[name]))
        assert results[name].structured_content["success"] is True
    assert "warehouse" in text_of(results["host_cli"])
    assert results["search_knowledge_base"].structured_content["data"]
    assert "list connections" in text_of(results["host_list_commands"])
    assert "password" in text_of(results["get_connector_info"])
    # A tool that ran and failed is a tool error the model can read, not a protocol error.
    diagnose = results["diagnose_flow"]
    assert diagnose.is_error is True
    assert diagnose.structured_content["success"] is False
    assert "no_such_flow" in text_of(diagnose)
    imported = results["import_template"]
    assert imported.is_error is not True, text_of(imported)
    flows = server.host("list flows")["result"]
    assert "mcp_import" in flows


def test_bad_calls_are_errors_the_caller_can_read(server: Server, readonly_key: str) -> None:
    async def scenario() -> None:
        async with connect(server) as conn:
            bad = await conn.session.call_tool("search_templates", {"query": 5})
            assert bad.is_error is True
            assert bad.structured_content["code"] == "invalid_arguments"
            assert "'query' must be a string" in text_of(bad)
            with pytest.raises(MCPError) as unknown:
                await conn.session.call_tool("drop_everything", {})
            assert "unknown tool 'drop_everything'" in str(unknown.value)
        async with connect(server, key=readonly_key) as conn:
            refused = await conn.session.call_tool("host_cli", {"command": "delete connection warehouse"})
            assert refused.is_error is True
            assert refused.structured_content["code"] == "forbidden"
            assert "read-only" in text_of(refused)
            allowed = await conn.session.call_tool("search_knowledge_base", {"query": "flows"})
            assert allowed.is_error is not True
            listed = await conn.session.list_tools()
            assistant = next(t for t in listed.tools if t.name == "etlworks_assistant")
            assert assistant.annotations.read_only_hint is True

    run(scenario())
    assert "warehouse" in server.host("list connections")["result"]


def test_the_assistant_runs_the_agent_and_reports_progress(server: Server) -> None:
    progress: List[Dict[str, Any]] = []

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        progress.append({"progress": done, "total": total, "message": message})

    async def scenario() -> List[types.CallToolResult]:
        async with connect(server) as conn:
            first = await conn.session.call_tool(
                "etlworks_assistant", {"message": "list connections"}, progress_callback=on_progress
            )
            second = await conn.session.call_tool("etlworks_assistant", {"message": "list flows"})
            return [first, second]

    first, second = run(scenario())
    assert first.is_error is not True, text_of(first)
    body = first.structured_content
    assert body["success"] is True
    assert "host_cli" in body["tools_used"]
    assert "warehouse" in body["response"]
    assert body["response"] in text_of(first)
    assert body["session_id"].startswith("ses_")
    assert body["run_id"].startswith("run_")
    # One notification when each tool starts and one when it ends, in order.
    calls = len(body["tool_calls"])
    assert [p["progress"] for p in progress] == [float(i) for i in range(1, 2 * calls + 1)]
    assert progress[0]["message"].startswith("calling host_cli")
    assert "succeeded" in progress[1]["message"]
    # The second call continues the same conversation (the MCP session's agent session).
    assert second.structured_content["session_id"] == body["session_id"]
    messages = server.api("GET", f"/sessions/{body['session_id']}/messages")["messages"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == ["list connections", "list flows"]


def test_the_assistant_continues_a_named_session_and_refuses_an_unknown_one(server: Server) -> None:
    session_id = server.api("POST", "/sessions", {"title": "from REST"})["session_id"]

    async def scenario() -> List[types.CallToolResult]:
        async with connect(server) as conn:
            named = await conn.session.call_tool(
                "etlworks_assistant", {"message": "list connections", "session_id": session_id}
            )
            unknown = await conn.session.call_tool(
                "etlworks_assistant", {"message": "hi", "session_id": "ses_doesnotexist"}
            )
            return [named, unknown]

    named, unknown = run(scenario())
    assert named.structured_content["session_id"] == session_id
    assert server.api("GET", f"/sessions/{session_id}")["session"]["message_count"] >= 2
    assert unknown.is_error is True
    assert unknown.structured_content["code"] == "session_not_found"


def test_cancelling_the_assistant_stops_its_run(server: Server, slow_api: SlowApi) -> None:
    server.host(
        f"create connection slowapi type=http url={slow_api.url}; "
        "create flow slow_flow source=slowapi object=/items destination=warehouse target=slow_items"
    )
    started = anyio.Event()

    async def on_progress(done: float, total: Optional[float], message: Optional[str]) -> None:
        if message and message.startswith("calling"):
            started.set()

    async def scenario() -> str:
        async with connect(server) as conn:
            warm = await conn.session.call_tool("etlworks_assistant", {"message": "list flows"})
            session_id = warm.structured_content["session_id"]
            begun = anyio.current_time()
            async with anyio.create_task_group() as group:

                async def ask() -> None:
                    await conn.session.call_tool(
                        "etlworks_assistant", {"message": "run flow slow_flow"}, progress_callback=on_progress
                    )

                group.start_soon(ask)
                with anyio.fail_after(20):
                    await started.wait()
                group.cancel_scope.cancel()
            assert anyio.current_time() - begun < 8, "the call should end at the cancel, not when the flow does"
            # The session stays usable after the cancellation.
            after = await conn.session.call_tool("host_list_commands", {})
            assert after.is_error is not True
            return session_id

    session_id = run(scenario())
    # The run was stopped while its tool worked; the session keeps a consistent turn saying so.
    end = time.monotonic() + 20
    while True:
        messages = server.api("GET", f"/sessions/{session_id}/messages")["messages"]
        stopped = [m for m in messages if m["role"] == "tool" and "canceled" in m["content"]]
        if stopped or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert stopped, json.dumps(messages, indent=1)[-3000:]
    assert stopped[0]["name"] == "host_cli"


def test_a_deleted_session_answers_404_and_the_client_starts_again(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server) as conn:
            old = conn.session_id
            deleted = await conn.http.delete(
                server.mcp_url, headers={"mcp-session-id": old, "mcp-protocol-version": "2025-11-25"}
            )
            assert deleted.status_code in (200, 202, 204), deleted.text
            with pytest.raises(MCPError) as gone:
                await conn.session.list_tools()
            assert "Session terminated" in str(gone.value)
            raw = await conn.http.post(
                server.mcp_url,
                headers={
                    "mcp-session-id": old,
                    "accept": "application/json, text/event-stream",
                    "content-type": "application/json",
                },
                content=json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
            )
            assert raw.status_code == 404
            assert raw.json()["code"] == "session_not_found"
        # A new connection initialises a new session and works.
        async with connect(server) as again:
            assert again.session_id != old
            assert (await again.session.list_tools()).tools

    run(scenario())
