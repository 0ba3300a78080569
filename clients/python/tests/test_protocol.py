"""Wire details the real server does not produce on demand, over real HTTP from a scripted server.

The SSE reader must cope with what any server or proxy may send (events split across chunks at
any byte, CRLF line ends, multi-line data, comments, U+2028 in JSON strings); retries must
resend only what is safe to resend; failures reported inside a 200 and proxy pages must raise
the right errors.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
from conftest import BASH_CLIENT, client_env, run

from etlworks_agent import (
    APIError,
    APITimeoutError,
    CapExceededError,
    EtlworksAgent,
    InternalServerError,
    StreamError,
    _iter_sse,
)

Step = Callable[[BaseHTTPRequestHandler], None]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up on purpose are part of the script


class Scripted:
    """A local HTTP server answering each request with the next scripted step."""

    def __init__(self, steps: List[Step]) -> None:
        self.steps = list(steps)
        self.requests: List[Tuple[str, str, bytes]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                scripted.requests.append((self.command, self.path, body))
                step = scripted.steps.pop(0) if scripted.steps else reply(500, {"error": "no more steps"})
                step(self)

            do_GET = do_POST = do_DELETE = handle_one

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: List[Scripted] = []

    def make(*steps: Step) -> Scripted:
        server = Scripted(list(steps))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def reply(
    status: int, body: object, headers: Optional[dict] = None, content_type: str = "application/json"
) -> Step:
    def step(handler: BaseHTTPRequestHandler) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        handler.send_header("x-request-id", "req-scripted")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return step


def sse(chunks: List[bytes], *, finish: bool = True, pause: float = 0.0) -> Step:
    """Answers text/event-stream in exactly these chunks; finish=False cuts the connection."""

    def step(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("x-request-id", "req-stream")
        handler.end_headers()
        for chunk in chunks:
            assert chunk, "an empty chunk would end the chunked body"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
            if pause:
                time.sleep(pause)
        if finish:
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.close_connection = True
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)

    return step


def frame(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


DONE = {"type": "done", "success": True, "response": "Hi there", "tools_used": []}


def agent_for(server: Scripted, **options: object) -> EtlworksAgent:
    return EtlworksAgent(server.url, "k" * 256, **options)  # type: ignore[arg-type]


# -- the SSE reader, fed chunk by chunk ---------------------------------------------------------


def events_of(chunks: List[str]) -> List[Tuple[str, str]]:
    return list(_iter_sse(chunks))


def test_sse_fields_comments_and_multiline_data() -> None:
    text = (
        ": keep-alive\n"
        "event: token\n"
        "id: 7\n"
        "retry: 1000\n"
        'data: {"a":\n'
        "data:  1}\n"
        "\n"
        "data:no-space\n"
        "\n"
        "event: ignored because no data\n"
        "\n"
        "event: cut\n"
        "data: never finished"
    )
    assert events_of([text]) == [("token", '{"a":\n 1}'), ("message", "no-space")]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_sse_line_ends_split_anywhere(line_end: str) -> None:
    text = (
        f'\ufeffevent: token{line_end}data: {{"content":"x\u2028y"}}{line_end}{line_end}'
        f"event: done{line_end}data: {{}}{line_end}{line_end}"
    )
    expected = [("token", '{"content":"x\u2028y"}'), ("done", "{}")]
    # Every way of cutting the text in two, and one character at a time.
    for cut in range(len(text) + 1):
        assert events_of([text[:cut], text[cut:]]) == expected, (line_end, cut)
    assert events_of(list(text)) == expected


def test_stream_over_http_with_awkward_chunks(scripted: Callable[..., Scripted]) -> None:
    body = (
        b": keep-alive\r\n\r\n"
        + frame({"type": "start", "run_id": "run_1", "session_id": None}).replace(b"\n", b"\r\n")
        + frame({"type": "token", "content": "caf\u00e9 \u2028 "})
        + b'event: token\ndata: {"type":"token",\ndata: "content":"\xe2\x9c\x93"}\n\n'
        + frame(dict(DONE, response="caf\u00e9 \u2028 \u2713"))
    )
    # Cut between the two bytes of an e-acute, between CR and LF, and elsewhere.
    cuts = sorted({5, body.index(b"\xc3") + 1, body.index(b"\r\n") + 1, len(body) - 7})
    chunks = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
    server = scripted(sse(chunks, pause=0.01))
    with agent_for(server).chat_stream("hi") as stream:
        events = list(stream)
    assert [e["type"] for e in events] == ["start", "token", "token", "done"]
    assert stream.text == "caf\u00e9 \u2028 \u2713" == events[-1]["response"]
    assert stream.request_id == "req-stream"
    method, path, sent = server.requests[0]
    assert (method, path) == ("POST", "/rest/v1/ai-agent/api/chat/stream")
    assert json.loads(sent) == {"message": "hi", "include_tools": True}


def test_an_error_event_raises_with_its_code(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        sse(
            [
                frame({"type": "token", "content": "so"}),
                frame({"type": "error", "error": "the run was canceled", "code": "canceled"}),
            ]
        ),
        sse([frame({"type": "error", "error": "AI usage cap exceeded", "code": "cap_exceeded"})]),
    )
    agent = agent_for(server)
    stream = agent.chat_stream("hi")
    assert next(stream)["content"] == "so"
    with pytest.raises(APIError) as canceled:
        next(stream)
    assert canceled.value.code == "canceled" and canceled.value.request_id == "req-stream"
    assert "the run was canceled" in str(canceled.value)
    with pytest.raises(CapExceededError):
        list(agent.chat_stream("hi"))


def test_a_stream_that_ends_or_breaks_without_done_raises_and_is_not_resent(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(
        sse([frame({"type": "token", "content": "partial"})], finish=True),
        sse([frame({"type": "token", "content": "partial"}), b"event: tok"], finish=False),
    )
    agent = agent_for(server, max_retries=3)
    with pytest.raises(StreamError) as ended:
        list(agent.chat_stream("hi"))
    assert ended.value.code == "incomplete_stream"
    assert "before its 'done' event" in str(ended.value)
    with pytest.raises(StreamError) as broke:
        list(agent.chat_stream("hi"))
    assert broke.value.code == "incomplete_stream"
    assert len(server.requests) == 2  # one POST each: a started stream is never sent again


def test_bad_event_data(scripted: Callable[..., Scripted]) -> None:
    server = scripted(sse([b"event: token\ndata: {not json\n\n"]))
    with pytest.raises(StreamError) as bad:
        list(agent_for(server).chat_stream("hi"))
    assert bad.value.code == "bad_stream"


# -- retries ------------------------------------------------------------------------------------


def test_reads_are_retried_after_retry_after(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(503, {"success": False, "error": "busy", "code": "unavailable"}, {"retry-after": "1"}),
        reply(502, b"<html>bad gateway</html>", content_type="text/html"),
        reply(200, {"success": True, "tools": [], "count": 0}),
    )
    started = time.monotonic()
    assert agent_for(server).list_tools()["count"] == 0
    assert time.monotonic() - started >= 1.0
    assert len(server.requests) == 3


def test_changes_are_resent_only_when_the_server_did_not_act(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(429, {"success": False, "error": "slow down", "code": "rate_limited"}, {"retry-after": "0"}),
        reply(503, {"success": False, "error": "busy", "code": "unavailable"}, {"retry-after": "0"}),
        reply(200, dict(DONE, type=None)),
        reply(500, {"success": False, "error": "the server failed; see its log", "code": "internal"}),
    )
    agent = agent_for(server)
    assert agent.chat("hi")["response"] == "Hi there"
    assert len(server.requests) == 3
    with pytest.raises(InternalServerError) as failed:
        agent.chat("hi")
    assert failed.value.status == 500 and failed.value.code == "internal"
    assert len(server.requests) == 4  # a 500 after a POST may have acted: not resent


def test_a_long_retry_after_is_not_waited_for(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(429, {"success": False, "error": "slow down", "code": "rate_limited"}, {"retry-after": "3600"})
    )
    with pytest.raises(APIError) as limited:
        agent_for(server).list_tools()
    assert limited.value.retry_after == 3600
    assert len(server.requests) == 1


def test_streams_are_retried_before_they_start(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(503, {"success": False, "error": "busy", "code": "unavailable"}, {"retry-after": "0"}),
        sse([frame(DONE)]),
    )
    assert agent_for(server).chat_stream("hi").get_final_response()["response"] == "Hi there"
    assert len(server.requests) == 2


# -- failures inside answers and from things that are not the server -------------------------------


def test_failures_inside_a_200(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(200, {"success": False, "error": "AI usage cap exceeded", "code": "cap_exceeded"}),
        reply(200, {"success": False, "error": "no model is reachable", "code": "llm_unavailable"}),
        reply(200, {"success": False, "error": "AI usage cap exceeded", "code": "cap_exceeded"}),
    )
    agent = agent_for(server)
    with pytest.raises(CapExceededError) as cap:
        agent.chat("hi")
    assert (
        cap.value.status == 200
        and str(cap.value) == "AI usage cap exceeded (code cap_exceeded, request id req-scripted)"
    )
    with pytest.raises(APIError) as unavailable:
        agent.chat("hi")
    assert unavailable.value.code == "llm_unavailable"
    # A tool answer reporting the cap raises too; only tool_failed is returned.
    with pytest.raises(CapExceededError):
        agent.execute_tool("host_cli", {"command": "list flows"})


def test_answers_that_are_not_the_api(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        reply(200, b"<html>welcome to nginx</html>", content_type="text/html"),
        reply(404, b"<html>not here</html>", content_type="text/html"),
        reply(200, b"<html>login</html>", content_type="text/html"),
    )
    agent = agent_for(server, max_retries=0)
    with pytest.raises(APIError) as html:
        agent.list_tools()
    assert "not the Agent API's JSON" in str(html.value) and "ETLWORKS_URL" in str(html.value)
    with pytest.raises(APIError) as missing:
        agent.list_tools()
    assert missing.value.status == 404 and "without the API's error body" in str(missing.value)
    with pytest.raises(APIError) as not_a_stream:
        agent.chat_stream("hi")
    assert "instead of an event stream" in str(not_a_stream.value) or "not the Agent API" in str(
        not_a_stream.value
    )


# -- the bash script's stream reader against the same scripted server ----------------------------


@pytest.mark.parametrize("with_jq", [True, False], ids=["jq", "nojq"])
def test_bash_stream_reader(scripted: Callable[..., Scripted], path_without_jq: str, with_jq: bool) -> None:
    server = scripted(
        sse(
            [
                b": keep-alive\r\n\r\n"
                + frame({"type": "start", "run_id": "run_1"}).replace(b"\n", b"\r\n")
                + b'event: token\ndata: {"type":"token",\ndata: "content":"caf\xc3',
                b'\xa9 \\"q\\" \\u00e9\\n"}\n\n' + frame({"type": "token", "content": "\u2713"}),
                frame(dict(DONE, response='caf\u00e9 "q" \u00e9\n\u2713')),
            ]
        ),
        sse(
            [
                frame({"type": "token", "content": "so"}),
                frame({"type": "error", "error": "the run was canceled", "code": "canceled"}),
            ]
        ),
        sse([frame({"type": "token", "content": "partial"})]),
        reply(200, {"success": False, "error": "AI usage cap exceeded", "code": "cap_exceeded"}),
        reply(503, {"success": False, "error": "the knowledge base is busy", "code": "unavailable"}),
    )
    env = client_env(server.url, "k" * 256, path=None if with_jq else path_without_jq)

    def bash(*args: str) -> subprocess.CompletedProcess:
        return run(["bash", str(BASH_CLIENT), *args], env)

    whole = bash("chat-stream", "hi")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == 'caf\u00e9 "q" \u00e9\n\u2713\n'

    failed = bash("chat-stream", "hi")
    assert failed.returncode == 1
    assert failed.stdout == "so\n"
    assert failed.stderr == "error: the run was canceled (code canceled, request id req-stream)\n"

    cut = bash("chat-stream", "hi")
    assert cut.returncode == 1
    assert cut.stderr.startswith("error: the stream ended before its 'done' event")

    cap = bash("chat", "hi")
    assert cap.returncode == 1
    assert cap.stderr == "error: AI usage cap exceeded (code cap_exceeded, request id req-scripted)\n"

    busy = bash("chat-stream", "hi")
    assert busy.returncode == 1
    assert "the knowledge base is busy (HTTP 503, code unavailable, request id req-scripted)" in busy.stderr
    assert [r[1] for r in server.requests] == ["/rest/v1/ai-agent/api/chat/stream"] * 3 + [
        "/rest/v1/ai-agent/api/chat",
        "/rest/v1/ai-agent/api/chat/stream",
    ]


def test_python_cli_stream_output(scripted: Callable[..., Scripted]) -> None:
    server = scripted(
        sse([frame({"type": "token", "content": "caf\u00e9"}), frame(dict(DONE, response="caf\u00e9"))]),
        sse(
            [
                frame({"type": "token", "content": "so"}),
                frame({"type": "error", "error": "the run was canceled", "code": "canceled"}),
            ]
        ),
        sse([frame({"type": "token", "content": "partial"})]),
        sse([frame({"type": "error", "error": "AI usage cap exceeded", "code": "cap_exceeded"})]),
    )
    env = client_env(server.url, "k" * 256)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run([sys.executable, "-m", "etlworks_agent", *args], env)

    whole = cli("chat-stream", "hi")
    assert (whole.returncode, whole.stdout) == (0, "caf\u00e9\n")
    failed = cli("chat-stream", "hi")
    assert (failed.returncode, failed.stdout) == (1, "so\n")
    assert failed.stderr == "error: the run was canceled (code canceled, request id req-stream)\n"
    cut = cli("chat-stream", "hi")
    assert cut.returncode == 1 and cut.stdout == "partial\n"
    assert cut.stderr.startswith("error: the stream ended before its 'done' event")
    # With --json every line of standard output is one JSON object, the error included.
    events = cli("--json", "chat-stream", "hi")
    assert events.returncode == 1
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert lines == [
        {
            "type": "error",
            "error": "AI usage cap exceeded",
            "code": "cap_exceeded",
            "status": 200,
            "request_id": "req-stream",
        }
    ]


def test_timeouts(scripted: Callable[..., Scripted]) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.6)
        reply(200, {"success": True, "tools": [], "count": 0})(handler)

    server = scripted(
        slow, slow, sse([frame({"type": "start"}), frame({"type": "token", "content": "a"})], pause=0.6)
    )
    agent = agent_for(server, timeout=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as waited:
        agent.list_tools()
    assert str(waited.value).startswith(f"could not get an answer from {server.url} within 0.3 s")
    assert len(server.requests) == 2  # a read is retried once more
    assert time.monotonic() - started < 3
    # A stream whose next piece takes longer than the timeout breaks.
    with pytest.raises(StreamError) as stalled:
        list(agent.chat_stream("hi"))
    assert stalled.value.code == "incomplete_stream"
