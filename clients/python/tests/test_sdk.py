"""The EtlworksAgent SDK against the real server: every method, streams, sessions, each error class."""

from __future__ import annotations

import re
import time

import pytest
from conftest import Server, closed_port

import etlworks_agent
from etlworks_agent import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    EtlworksAgent,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

TOOLS = {
    "search_knowledge_base",
    "host_list_commands",
    "host_cli",
    "search_templates",
    "import_template",
    "get_connector_info",
    "diagnose_flow",
}


@pytest.fixture()
def agent(server: Server) -> EtlworksAgent:
    with EtlworksAgent(server.url, api_key=server.admin_key) as client:
        yield client


def test_list_tools(agent: EtlworksAgent) -> None:
    answer = agent.list_tools()
    assert answer["success"] is True
    assert answer["count"] == 7
    assert {t["name"] for t in answer["tools"]} == TOOLS
    host_cli = next(t for t in answer["tools"] if t["name"] == "host_cli")
    assert host_cli["agentic"] is True
    assert host_cli["parameters"]["required"] == ["command"]


def test_execute_tool(agent: EtlworksAgent) -> None:
    kb = agent.execute_tool("search_knowledge_base", {"query": "merge keys", "limit": 2})
    assert kb["success"] is True and kb["tool"] == "search_knowledge_base"
    assert "merge" in kb["result"].lower()
    assert kb["data"]["count"] == 2

    listed = agent.execute_tool("host_cli", {"command": "list connections"})
    assert "warehouse" in listed["result"]
    assert listed["data"]["results"][0]["ok"] is True

    # A tool without arguments takes none at all.
    commands = agent.execute_tool("host_list_commands")
    assert "list connections" in commands["result"]


def test_a_tool_that_ran_and_failed_is_an_answer(agent: EtlworksAgent) -> None:
    answer = agent.execute_tool("host_cli", {"command": "run flow nightly_orders --wait"})
    assert answer["success"] is False
    assert answer["code"] == "tool_failed"
    assert "unknown flow 'nightly_orders'" in answer["result"]


def test_tool_errors(agent: EtlworksAgent, server: Server) -> None:
    with pytest.raises(NotFoundError) as unknown:
        agent.execute_tool("run_sql", {})
    assert unknown.value.status == 404 and unknown.value.code == "tool_not_found"
    assert "unknown tool 'run_sql'" in unknown.value.message

    with pytest.raises(BadRequestError) as invalid:
        agent.execute_tool("search_knowledge_base", {"query": "x", "limit": 0})
    assert invalid.value.status == 400 and invalid.value.code == "invalid_arguments"
    assert "'limit'" in invalid.value.message

    readonly = EtlworksAgent(server.url, server.keys["readonly"])
    with pytest.raises(PermissionDeniedError) as denied:
        readonly.execute_tool("host_cli", {"command": "list connections"})
    error = denied.value
    assert error.status == 403 and error.code == "forbidden"
    assert "read-only" in error.message
    assert re.fullmatch(r"[0-9a-f]{32}", error.request_id or "")
    assert "HTTP 403" in str(error) and error.request_id in str(error)
    # A read-only key still runs the non-agentic tools.
    assert readonly.execute_tool("search_templates", {"query": "csv"})["success"] is True

    with pytest.raises(TypeError):
        agent.execute_tool("host_cli", "list connections")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key, says",
    [
        ("A" * 256, "not known to this server"),
        ("short", "malformed"),
    ],
)
def test_bad_key_is_an_authentication_error(server: Server, key: str, says: str) -> None:
    with pytest.raises(AuthenticationError) as failed:
        EtlworksAgent(server.url, key).list_tools()
    assert failed.value.status == 401 and failed.value.code == "unauthorized"
    assert says in failed.value.message
    assert isinstance(failed.value, APIError)


def test_chat(agent: EtlworksAgent) -> None:
    answer = agent.chat("list connections")
    assert answer["success"] is True
    assert "warehouse" in answer["response"]
    assert answer["tools_used"] == ["host_cli"]
    assert answer["tool_calls"][0]["arguments"] == {"command": "list connections"}
    assert answer["usage"]["llm_calls"] == 2
    assert answer["finish"] == "stop"

    howto = agent.chat("how do I schedule a flow?", system_prompt="Answer briefly.")
    assert "schedule flow" in howto["response"]
    assert howto["tools_used"] == ["search_knowledge_base"]


def test_chat_options_reach_the_server(agent: EtlworksAgent) -> None:
    no_tools = agent.chat("list connections", include_tools=False)
    assert no_tools["tools_used"] == []
    cut = agent.chat("how do I schedule a flow?", max_tokens=3)
    assert cut["finish"] == "length"
    with pytest.raises(BadRequestError) as wrong:
        agent.chat("hello", temperature=7)
    assert "'temperature'" in wrong.value.message


def test_chat_stream_tokens_make_the_done_response(agent: EtlworksAgent) -> None:
    events = []
    with agent.chat_stream("list connections") as stream:
        for event in stream:
            events.append(event)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert "tool_start" in kinds and "tool_end" in kinds and "usage" in kinds
    assert kinds.index("tool_start") < kinds.index("tool_end")
    tokens = "".join(e["content"] for e in events if e["type"] == "token")
    done = events[-1]
    assert tokens == done["response"] == stream.text
    assert stream.final is done
    assert "warehouse" in tokens
    tool_end = next(e for e in events if e["type"] == "tool_end")
    assert tool_end["name"] == "host_cli" and tool_end["success"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", stream.request_id or "")


def test_chat_stream_helpers(agent: EtlworksAgent) -> None:
    stream = agent.chat_stream("how do I schedule a flow?")
    text = "".join(stream.iter_text())
    assert text == stream.get_final_response()["response"]
    assert "schedule flow" in text
    # Leaving a stream early releases it; the client goes on working.
    with agent.chat_stream("list connections") as early:
        first = next(early)
        assert first["type"] == "start"
    assert agent.list_tools()["count"] == 7


def test_a_multi_turn_session(agent: EtlworksAgent) -> None:
    session_id = agent.create_session(title="sdk session", metadata={"team": "pytest"})
    assert re.fullmatch(r"ses_[a-z0-9]+", session_id)

    first = agent.session_chat(session_id, "create a connection to api.example.com")
    assert first["session_id"] == session_id
    created = re.search(r"Created connection '([^']+)'", first["response"])
    assert created, first["response"]
    name = created.group(1)

    # "it" is the connection made in the first turn: the session carried it over.
    with agent.session_chat_stream(session_id, "schedule it every hour") as stream:
        done = stream.get_final_response()
    assert done["session_id"] == session_id
    assert f"'{name}' is a connection" in done["response"]
    assert "every 1h" in done["response"]

    messages = agent.session_messages(session_id)
    assert messages["session_id"] == session_id
    roles = [m["role"] for m in messages["messages"]]
    assert roles[0] == "user" and {"assistant", "tool"} <= set(roles)
    assert messages["messages"][0]["content"] == "create a connection to api.example.com"
    assert roles.count("user") == 2
    page = agent.session_messages(session_id, limit=2, offset=1)
    assert [m["id"] for m in page["messages"]] == [2, 3]

    listed = agent.list_sessions(limit=1000)
    mine = next(s for s in listed["sessions"] if s["id"] == session_id)
    assert mine["title"] == "sdk session" and mine["metadata"] == {"team": "pytest"}
    assert mine["message_count"] == len(messages["messages"])
    assert agent.list_sessions(limit=1)["count"] == 1

    assert agent.get_session(session_id)["session"]["id"] == session_id
    assert agent.delete_session(session_id) == {"success": True}
    with pytest.raises(NotFoundError) as gone:
        agent.session_messages(session_id)
    assert gone.value.code == "session_not_found" and gone.value.status == 404


def test_session_options_and_unknown_sessions(agent: EtlworksAgent, server: Server) -> None:
    session_id = agent.create_session(include_tools=False, system_prompt="Be brief.")
    answer = agent.session_chat(session_id, "list connections")
    assert answer["tools_used"] == []
    # A turn's own option wins over the session's.
    assert agent.session_chat(session_id, "list connections", include_tools=True)["tools_used"] == [
        "host_cli"
    ]

    with pytest.raises(NotFoundError) as unknown:
        agent.session_chat("ses_nope", "hello")
    assert unknown.value.code == "session_not_found"
    with pytest.raises(NotFoundError):
        with agent.session_chat_stream("ses_nope", "hello"):
            pass
    with pytest.raises(NotFoundError):
        agent.delete_session("ses_nope")

    # Another tenant's key sees the session as unknown.
    other = EtlworksAgent(server.url, server.keys["other"])
    with pytest.raises(NotFoundError) as hidden:
        other.session_messages(session_id)
    assert hidden.value.code == "session_not_found"
    assert session_id not in {s["id"] for s in other.list_sessions()["sessions"]}
    agent.delete_session(session_id)


def test_configuration_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETLWORKS_URL", raising=False)
    monkeypatch.delenv("ETLWORKS_API_KEY", raising=False)
    with pytest.raises(ConfigurationError) as no_url:
        EtlworksAgent()
    assert str(no_url.value).startswith("ETLWORKS_URL is not set")
    monkeypatch.setenv("ETLWORKS_URL", server.url + "/rest/v1/ai-agent/api/")
    with pytest.raises(ConfigurationError) as no_key:
        EtlworksAgent()
    assert str(no_key.value).startswith("ETLWORKS_API_KEY is not set")
    monkeypatch.setenv("ETLWORKS_API_KEY", server.admin_key)
    agent = EtlworksAgent()
    assert agent.base_url == server.url  # the API path pasted into the URL is taken off
    assert agent.list_tools()["count"] == 7
    with pytest.raises(ConfigurationError) as scheme:
        EtlworksAgent("127.0.0.1:8080", "k")
    assert "http://" in str(scheme.value)


def test_server_down_is_a_connection_error(server: Server) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    agent = EtlworksAgent(url, server.admin_key, max_retries=1)
    started = time.monotonic()
    with pytest.raises(APIConnectionError) as down:
        agent.list_tools()
    message = str(down.value)
    assert message.startswith(f"cannot connect to {url}: connection refused")
    assert "ETLWORKS_URL" in message
    assert time.monotonic() - started < 5
    # A chat that could not even connect was never sent, so it is retried too, and fails alike.
    with pytest.raises(APIConnectionError):
        agent.chat("hello")


def test_rate_limit(limited_server: Server) -> None:
    key = limited_server.create_key("rate", "user")
    impatient = EtlworksAgent(limited_server.url, key, max_retries=0)
    with pytest.raises(RateLimitError) as limited:
        for _ in range(5):
            impatient.list_tools()
    error = limited.value
    assert error.status == 429 and error.code == "rate_limited"
    assert error.retry_after is not None and 1 <= error.retry_after <= 2

    # With retries the client waits the Retry-After and gets through, for reads and for chat.
    patient = EtlworksAgent(limited_server.url, key, max_retries=3)
    started = time.monotonic()
    assert patient.list_tools()["count"] == 7
    assert "warehouse" in patient.chat("list connections")["response"]
    assert time.monotonic() - started >= 0.5


def test_version_and_exports() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", etlworks_agent.__version__)
    for name in etlworks_agent.__all__:
        assert hasattr(etlworks_agent, name), name
