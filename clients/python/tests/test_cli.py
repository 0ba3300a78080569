"""The command-line clients against the real server, each run as a user would run it.

The same checks run for ``python -m etlworks_agent``, the single downloaded file
``python etlworks_agent.py``, and ``etlworks-agent.sh`` with and without jq on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import BASH_CLIENT, PYTHON_SRC, Server, client_env, closed_port, run

COMMANDS = [
    "tools",
    "tool",
    "chat",
    "chat-stream",
    "session-create",
    "session-chat",
    "session-chat-stream",
    "session-messages",
    "session-list",
    "session-delete",
]
QUESTION = "how do I schedule a flow?"


@dataclass
class Cli:
    """One way of running the command-line client."""

    name: str
    argv: List[str]
    path: Optional[str] = None
    pythonpath: bool = True

    @property
    def is_bash(self) -> bool:
        return self.name.startswith("bash")

    @property
    def has_jq(self) -> bool:
        return self.name != "bash-nojq"

    def env(self, url: Optional[str], key: Optional[str]) -> Dict[str, str]:
        env = client_env(url, key, path=self.path)
        if not self.pythonpath:
            env.pop("PYTHONPATH", None)
        return env

    def __call__(
        self,
        server: Optional[Server],
        *args: str,
        key: Optional[str] = None,
        url: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
    ) -> subprocess.CompletedProcess:
        if env is None:
            env = self.env(
                url or (server.url if server else None), key or (server.admin_key if server else None)
            )
        return run(self.argv + list(args), env)


@pytest.fixture(scope="module")
def single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The core module saved as one file, as downloaded from the server."""
    folder = tmp_path_factory.mktemp("download")
    target = folder / "etlworks_agent.py"
    shutil.copyfile(PYTHON_SRC / "etlworks_agent" / "__init__.py", target)
    return target


@pytest.fixture(params=["python-m", "python-file", "bash-jq", "bash-nojq"])
def cli(request: pytest.FixtureRequest, single_file: Path, path_without_jq: str) -> Cli:
    if request.param == "python-m":
        return Cli("python-m", [sys.executable, "-m", "etlworks_agent"])
    if request.param == "python-file":
        return Cli("python-file", [sys.executable, str(single_file)], pythonpath=False)
    if request.param == "bash-jq":
        if shutil.which("jq") is None:
            pytest.fail(
                "jq is not installed; scripts/test-clients installs it (apt-get install jq)", pytrace=False
            )
        return Cli("bash-jq", ["bash", str(BASH_CLIENT)], path=os.environ["PATH"])
    return Cli("bash-nojq", ["bash", str(BASH_CLIENT)], path=path_without_jq)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_help_lists_the_commands_and_variables(cli: Cli) -> None:
    result = cli(None, "--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert (
            re.search(rf"^\s+{re.escape(command)}\b", result.stdout, re.MULTILINE)
            or f" {command} " in result.stdout
        ), command
    assert "ETLWORKS_URL" in result.stdout and "ETLWORKS_API_KEY" in result.stdout


def test_tools(cli: Cli, server: Server) -> None:
    result = cli(server, "tools")
    assert result.returncode == 0, result.stderr
    assert "host_cli (agentic)" in result.stdout
    assert "search_knowledge_base" in result.stdout
    as_json = cli(server, "--json", "tools")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["count"] == 7


def test_tool(cli: Cli, server: Server) -> None:
    result = cli(server, "tool", "host_cli", '{"command": "list connections"}')
    assert result.returncode == 0, result.stderr
    assert re.search(r"^warehouse\s+sqlite", result.stdout, re.MULTILINE)
    no_args = cli(server, "tool", "host_list_commands")
    assert no_args.returncode == 0, no_args.stderr
    assert "list connections" in no_args.stdout
    as_json = cli(server, "tool", "search_knowledge_base", '{"query": "merge keys", "limit": 1}', "--json")
    assert json.loads(as_json.stdout)["data"]["count"] == 1


@pytest.mark.parametrize(
    "arguments, says",
    [
        ('{"query": ', "not valid JSON"),
        ("{query: 'x'}", "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_tool_with_bad_json_arguments(cli: Cli, server: Server, arguments: str, says: str) -> None:
    result = cli(server, "tool", "search_knowledge_base", arguments)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_line_error(result)
    assert says in line
    # The message shows a working example.
    assert 'tool search_knowledge_base \'{"query": "merge keys", "limit": 3}\'' in line
    assert result.stdout == ""


def test_a_tool_that_fails(cli: Cli, server: Server) -> None:
    result = cli(server, "tool", "host_cli", '{"command": "run flow nightly_orders --wait"}')
    assert result.returncode == 1
    assert "unknown flow 'nightly_orders'" in result.stdout
    assert "ran and failed" in one_line_error(result)


def test_chat(cli: Cli, server: Server) -> None:
    result = cli(server, "chat", "list connections")
    assert result.returncode == 0, result.stderr
    assert "warehouse (sqlite)" in result.stdout
    no_tools = cli(server, "--json", "chat", "list connections", "--no-tools")
    assert json.loads(no_tools.stdout)["tools_used"] == []


def test_chat_stream(cli: Cli, server: Server) -> None:
    whole = json.loads(cli(server, "chat", "--json", QUESTION).stdout)["response"]
    streamed = cli(server, "chat-stream", QUESTION)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == whole + "\n"
    notes = streamed.stderr.strip().splitlines()
    assert notes[0].startswith("[tool search_knowledge_base {") and "how do I schedule a flow" in notes[0]
    assert re.fullmatch(r"\[tool search_knowledge_base ok, \d+ ms\]", notes[1])

    events = cli(server, "--json", "chat-stream", QUESTION)
    assert events.returncode == 0, events.stderr
    parsed = [json.loads(line) for line in events.stdout.splitlines()]
    assert parsed[0]["type"] == "start" and parsed[-1]["type"] == "done"
    assert "".join(e["content"] for e in parsed if e["type"] == "token") == parsed[-1]["response"] == whole


def test_a_session(cli: Cli, server: Server) -> None:
    created = cli(server, "session-create", "--title", f"cli {cli.name}")
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    assert re.fullmatch(r"ses_[a-z0-9]+", session_id)

    first = cli(server, "session-chat", session_id, "create a connection to api.example.com")
    assert first.returncode == 0, first.stderr
    name = re.search(r"Created connection '([^']+)'", first.stdout)
    assert name, first.stdout

    second = cli(server, "session-chat-stream", session_id, "schedule it every hour")
    assert second.returncode == 0, second.stderr
    assert f"'{name.group(1)}' is a connection" in second.stdout and "every 1h" in second.stdout
    assert "[tool host_cli" in second.stderr

    messages = cli(server, "session-messages", session_id)
    assert messages.returncode == 0, messages.stderr
    assert "create a connection to api.example.com" in messages.stdout
    assert "schedule it every hour" in messages.stdout
    if cli.has_jq:
        assert messages.stdout.startswith("#1 user: create a connection to api.example.com\n")
        assert re.search(r"^#2 assistant: calls host_cli \{", messages.stdout, re.MULTILINE)
    else:
        assert json.loads(messages.stdout)["session_id"] == session_id
    paged = cli(server, "--json", "session-messages", session_id, "--limit", "2", "--offset", "1")
    assert [m["id"] for m in json.loads(paged.stdout)["messages"]] == [2, 3]

    listed = cli(server, "session-list", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    assert session_id in listed.stdout and f"cli {cli.name}" in listed.stdout

    deleted = cli(server, "session-delete", session_id)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted session {session_id}"

    gone = cli(server, "session-messages", session_id)
    assert gone.returncode == 1
    line = one_line_error(gone)
    assert f"there is no session '{session_id}'" in line
    assert "HTTP 404" in line and "code session_not_found" in line
    assert re.search(r"request id [0-9a-f]{32}\)$", line)


def test_session_of_another_tenant_is_unknown(cli: Cli, server: Server) -> None:
    session_id = cli(server, "session-create").stdout.strip()
    hidden = cli(server, "session-chat", session_id, "hello", key=server.keys["other"])
    assert hidden.returncode == 1
    assert "code session_not_found" in one_line_error(hidden)
    assert cli(server, "session-delete", session_id).returncode == 0


def test_bad_key(cli: Cli, server: Server) -> None:
    result = cli(server, "tools", key="A" * 256)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "not known to this server" in line and "HTTP 401" in line and "code unauthorized" in line


def test_read_only_key_calling_host_cli(cli: Cli, server: Server) -> None:
    result = cli(server, "tool", "host_cli", '{"command": "list connections"}', key=server.keys["readonly"])
    assert result.returncode == 1
    line = one_line_error(result)
    assert "read-only" in line and "HTTP 403" in line and "code forbidden" in line
    assert result.stdout == ""
    # --json also prints the error body for scripts.
    as_json = cli(
        server, "--json", "tool", "host_cli", '{"command": "list connections"}', key=server.keys["readonly"]
    )
    assert json.loads(as_json.stdout)["code"] == "forbidden"


def test_no_url_or_key(cli: Cli, server: Server) -> None:
    no_url = cli(None, "tools", env=cli.env(None, server.admin_key))
    assert no_url.returncode == 2
    assert one_line_error(no_url).startswith(
        "error: ETLWORKS_URL is not set; set it to the server's root URL"
    )
    no_key = cli(None, "tools", env=cli.env(server.url, None))
    assert no_key.returncode == 2
    assert one_line_error(no_key).startswith("error: ETLWORKS_API_KEY is not set")
    bad_url = cli(None, "tools", env=cli.env("localhost:8080", server.admin_key))
    assert bad_url.returncode == 2
    assert "must start with http:// or https://" in one_line_error(bad_url)


def test_server_down(cli: Cli, server: Server) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (["tools"], ["chat-stream", "hello"]):
        result = cli(server, *args, url=url)
        assert result.returncode == 1, args
        line = one_line_error(result)
        assert line.startswith(f"error: cannot connect to {url}: ")
        assert "ETLWORKS_URL" in line
        assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["chat"],
        ["session-chat", "ses_x"],
        ["tools", "--title", "x"],
        ["session-list", "--limit", "many"],
    ],
)
def test_usage_errors(cli: Cli, server: Server, args: List[str]) -> None:
    result = cli(server, *args)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "error" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_api_url_pasted_whole_works(cli: Cli, server: Server) -> None:
    result = cli(server, "tools", url=server.url + "/rest/v1/ai-agent/api/")
    assert result.returncode == 0, result.stderr


def test_bash_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail(
            "shellcheck is not installed; scripts/test-clients installs it (apt-get install shellcheck)",
            pytrace=False,
        )
    result = run([shellcheck, "--shell=bash", str(BASH_CLIENT)], client_env(None, None))
    assert result.returncode == 0, result.stdout + result.stderr
