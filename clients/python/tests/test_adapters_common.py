"""What the three framework adapters share: each module is importable only with its framework and
otherwise names the pip extra; the extras are declared; and the guard that keeps the frameworks
off the internet during the adapter tests (used by test_adapters_*.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List

import pytest
from conftest import PYTHON_SRC, Server, client_env, run, start_server

# The frameworks must not phone home while tested: telemetry and tracing off before they load.
QUIET_FRAMEWORKS = {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "AUTOGEN_DISABLE_RUNTIME_TRACING": "true",
}
os.environ.update(QUIET_FRAMEWORKS)


JSON = Dict[str, Any]
Step = Callable[[JSON], JSON]


class ScriptedModel:
    """An OpenAI-compatible Chat Completions server that answers from a script of steps.

    Each step gets the request body and returns the assistant message to send back. Requests
    are kept for the assertions; a request past the end of the script fails the run.
    """

    def __init__(self, steps: List[Step]) -> None:
        self.steps = steps
        self.requests: List[JSON] = []
        self.errors: List[str] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    model.errors.append(f"unexpected POST {self.path}")
                    self.send_error(404)
                    return
                model.requests.append(body)
                index = len(model.requests) - 1
                if index >= len(model.steps):
                    model.errors.append(f"request {index + 1} is past the script: {body['messages'][-1]}")
                    self.send_error(500, "the script has ended")
                    return
                message = model.steps[index](body)
                self.reply(body, message, index)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                model.errors.append(f"unexpected GET {self.path}")
                self.send_error(404)

            def reply(self, body: JSON, message: JSON, index: int) -> None:
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
                if body.get("stream"):
                    delta = dict(message)
                    if "tool_calls" in delta:
                        delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(delta["tool_calls"])]
                    chunks = [
                        {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage},
                    ]
                    payload = "".join(
                        "data: "
                        + json.dumps(
                            dict(
                                c,
                                id=f"chatcmpl-{index}",
                                object="chat.completion.chunk",
                                created=0,
                                model="scripted",
                            )
                        )
                        + "\n\n"
                        for c in chunks
                    )
                    data = (payload + "data: [DONE]\n\n").encode()
                    content_type = "text/event-stream"
                else:
                    data = json.dumps(
                        {
                            "id": f"chatcmpl-{index}",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "scripted"),
                            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                            "usage": usage,
                        }
                    ).encode()
                    content_type = "application/json"
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tool_call(name: str, args: JSON, call_id: str) -> JSON:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        ],
    }


def last_tool_result(body: JSON) -> str:
    results = [m for m in body["messages"] if m.get("role") == "tool"]
    assert results, f"no tool result in the request: {body['messages']}"
    content = results[-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def delegating_model(connection: str) -> Step:
    """A scripted model's every step for the docs' agent examples: it reads the folder from the
    user's request, has etlworks_assistant connect to it, schedule it every hour and run it,
    passing on the session id each answer gave, then reports the last answer."""

    def step(body: JSON) -> JSON:
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        request = " ".join(_text(m.get("content")) for m in body["messages"] if m.get("role") == "user")
        folder = re.search(r"/[\w./-]*inbox-\w+", request)
        assert folder, f"no inbox folder in the request: {request!r}"
        found = re.findall(r"session_id: (ses_[a-z0-9]+)", " ".join(_text(m.get("content")) for m in results))
        steps = [
            f"create a connection to the folder {folder.group(0)} named {connection}",
            "schedule it every hour",
            "run it",
        ]
        if len(results) < len(steps):
            args = {"message": steps[len(results)], "session_id": found[-1] if found else None}
            return tool_call("etlworks_assistant", args, f"call_{len(results) + 1}")
        return {"role": "assistant", "content": "DONE: " + _text(results[-1].get("content")).splitlines()[0]}

    return step


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else json.dumps(content)


def own_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Server]:
    """A server of the adapter tests' own (they create connections and flows that the other
    client tests' shared server should not see), with a read-only key."""
    running = start_server(tmp_path_factory.mktemp(f"{name}-server"), "--rate-limit", "0")
    try:
        running.keys["readonly"] = running.create_key(f"{name} readonly", "readonly")
        yield running
    finally:
        running.stop()


def _is_local(host: Any) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class NetworkGuard:
    """Refuses, and remembers, every connection or name lookup that leaves this machine."""

    def __init__(self) -> None:
        self.attempts: List[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo

        def refuse(what: str) -> OSError:
            self.attempts.append(what)
            return OSError(f"the adapter tests allow no network access beyond this machine: {what}")

        def connect(sock: socket.socket, address: Any) -> None:
            host = address[0] if isinstance(address, tuple) else address
            if not _is_local(host):
                raise refuse(f"connect to {address!r}")
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            host = address[0] if isinstance(address, tuple) else address
            if not _is_local(host):
                raise refuse(f"connect to {address!r}")
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            # An address literal needs no lookup (connect() judges it); any other name but
            # localhost would ask a DNS server.
            if name is not None and not _is_local(name) and not _is_address(name):
                raise socket.gaierror(socket.EAI_NONAME, str(refuse(f"look up {name!r}")))
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture()
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fails the test if anything tried to reach beyond 127.0.0.1, even if the caller swallowed it."""
    guard = NetworkGuard()
    guard.install(monkeypatch)
    yield guard
    assert guard.attempts == [], f"a framework tried to reach the internet: {guard.attempts}"


def test_the_network_guard_refuses_the_internet_and_allows_loopback(no_internet: NetworkGuard) -> None:
    with pytest.raises(OSError, match="no network access"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    with pytest.raises(OSError, match="no network access"):
        socket.getaddrinfo("telemetry.example.com", 443)
    assert no_internet.attempts == ["connect to ('192.0.2.1', 443)", "look up 'telemetry.example.com'"]
    no_internet.attempts.clear()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with socket.create_connection(listener.getsockname(), timeout=5):
        pass
    listener.close()


@pytest.mark.parametrize(
    "module, blocked, packages",
    [
        ("langchain", "langchain_core", "langchain-core"),
        ("crewai", "crewai", "crewai"),
        ("autogen", "autogen_agentchat", "autogen-agentchat autogen-core"),
        ("autogen", "autogen_core", "autogen-agentchat autogen-core"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra_to_install(
    module: str, blocked: str, packages: str
) -> None:
    # A None entry in sys.modules makes `import blocked` fail as if it were not installed.
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import etlworks_agent\n"
        "try:\n"
        f"    import etlworks_agent.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    done = run([sys.executable, "-c", script], client_env(None, None), cwd=PYTHON_SRC)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert f"pip install 'etlworks-agent[{module}]'" in message, message
    assert f"(or: pip install {packages})" in message, message
    assert blocked in message, message


def test_the_core_imports_no_framework() -> None:
    script = (
        "import sys, etlworks_agent\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'crewai', 'autogen_core', 'autogen_agentchat', 'pydantic'))\n"
        "print(loaded)\n"
    )
    done = run([sys.executable, "-c", script], client_env(None, None), cwd=PYTHON_SRC)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_each_adapter_is_an_optional_extra() -> None:
    text = (PYTHON_SRC / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = {}
    for line in section.strip().splitlines():
        name, _, value = line.partition("=")
        extras[name.strip()] = value.strip()
    assert set(extras) == {"langchain", "crewai", "autogen", "all"}, extras
    assert "langchain-core" in extras["langchain"] and "langchain>" not in extras["langchain"]
    assert "crewai" in extras["crewai"]
    assert "autogen-agentchat" in extras["autogen"] and "autogen-core" in extras["autogen"]
    for name in ("langchain", "crewai", "autogen"):
        assert f"etlworks-agent[{name}]" in extras["all"] or name in extras["all"]
