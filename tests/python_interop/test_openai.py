"""The `openai` Python package against the server's OpenAI-compatible endpoint (/v1): the agent
listed as a model, answers whole and streamed, usage filled, and the errors OpenAI clients
raise."""

from __future__ import annotations

from typing import List

import openai
import pytest
from openai import OpenAI

from conftest import Server


def client(server: Server, key: str = "") -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=key or server.admin_key, max_retries=0, timeout=60)


def test_the_agent_is_listed_as_a_model(server: Server) -> None:
    api = client(server)
    models = api.models.list()
    assert [m.id for m in models.data] == ["etlworks-agent"]
    one = api.models.retrieve("etlworks-agent")
    assert one.owned_by == "etlworks-agent"
    assert one.model_extra["etlworks"]["underlying_model"] == "built-in-planner"
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.retrieve("gpt-4o")
    assert "etlworks-agent" in str(missing.value)


def test_a_completion_is_one_agent_turn_with_usage(server: Server) -> None:
    completion = client(server).chat.completions.create(
        model="etlworks-agent",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "list connections"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-run_")
    assert completion.model == "etlworks-agent"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert "warehouse" in (choice.message.content or "")
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens > 0
    extra = completion.model_extra["etlworks"]
    assert "host_cli" in extra["tools_used"]
    assert extra["run_id"] == completion.id.removeprefix("chatcmpl-")


def test_earlier_messages_reach_the_agent_as_history(server: Server) -> None:
    api = client(server)
    question = [{"role": "user", "content": "how do I schedule a flow?"}]
    alone = api.chat.completions.create(model="etlworks-agent", messages=question)
    history = [
        {"role": "user", "content": "list connections"},
        {"role": "assistant", "content": "There is one connection, warehouse, an SQLite database. " * 20},
    ]
    with_history = api.chat.completions.create(model="etlworks-agent", messages=history + question)
    assert with_history.usage.prompt_tokens > alone.usage.prompt_tokens + 100


def test_a_streamed_completion_arrives_as_chunks_ending_with_usage(server: Server) -> None:
    api = client(server)
    stream = api.chat.completions.create(
        model="etlworks-agent",
        messages=[{"role": "user", "content": "list connections"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "warehouse" in text
    finishes: List[str] = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    # The same question answered whole says the same thing.
    whole = api.chat.completions.create(model="etlworks-agent", messages=[{"role": "user", "content": "list connections"}])
    assert whole.choices[0].message.content == text


def test_a_stream_without_usage_requested_has_none(server: Server) -> None:
    stream = client(server).chat.completions.create(
        model="etlworks-agent", messages=[{"role": "user", "content": "list flows"}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_errors_are_the_ones_openai_clients_raise(server: Server, readonly_key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        client(server, key="not-a-key").models.list()
    assert unauthorized.value.status_code == 401
    assert unauthorized.value.body["code"] == "unauthorized"

    api = client(server)
    user = [{"role": "user", "content": "list flows"}]
    with pytest.raises(openai.BadRequestError) as two:
        api.chat.completions.create(model="etlworks-agent", messages=user, n=2)
    assert two.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as tools:
        api.chat.completions.create(
            model="etlworks-agent",
            messages=user,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice="required",
        )
    assert "client-side tools are not supported" in tools.value.body["message"]
    with pytest.raises(openai.BadRequestError) as last:
        api.chat.completions.create(model="etlworks-agent", messages=[{"role": "system", "content": "x"}])
    assert "last message must be the user's" in last.value.body["message"]
    with pytest.raises(openai.BadRequestError) as model:
        api.chat.completions.create(model="gpt-4o", messages=user)
    assert "gpt-4o" in model.value.body["message"]

    # A read-only key may chat; the agent is offered only the tools that read.
    answer = client(server, key=readonly_key).chat.completions.create(model="etlworks-agent", messages=user)
    assert answer.choices[0].message.content
