"""etlworks-agent.ps1: run against the real server where PowerShell is installed; otherwise
checked statically to offer the same commands, options and environment variables as the
Python and bash clients (and the test says which of the two it did)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import List, Optional, Set

import pytest
from conftest import BASH_CLIENT, PS_CLIENT, Server, client_env, closed_port, run

import etlworks_agent

PWSH = shutil.which("pwsh")


def python_commands() -> List[str]:
    parser = etlworks_agent._build_parser("etlworks_agent")
    subparsers = next(a for a in parser._actions if isinstance(a, etlworks_agent.argparse._SubParsersAction))
    return list(subparsers.choices)


def python_options() -> Set[str]:
    parser = etlworks_agent._build_parser("etlworks_agent")
    options = {o for a in parser._actions for o in a.option_strings}
    subparsers = next(a for a in parser._actions if isinstance(a, etlworks_agent.argparse._SubParsersAction))
    for sub in subparsers.choices.values():
        options |= {o for a in sub._actions for o in a.option_strings}
    return {o for o in options if o.startswith("--")}


def commands_section(help_text: str) -> List[str]:
    """The command lines of a --help text's 'commands:' section, program name left out."""
    section = help_text.split("commands:", 1)[1].split("\n\n", 1)[0]
    return [line.rstrip() for line in section.splitlines() if line.strip()]


def options_in(text: str) -> Set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def bash_help() -> str:
    return run(["bash", str(BASH_CLIENT), "--help"], client_env(None, None)).stdout


# Cmdlets the script may call: each exists in Windows PowerShell 5.1 and PowerShell 7.
BUILTIN_CMDLETS = {
    "Add-Type",
    "ConvertFrom-Json",
    "ConvertTo-Json",
    "New-Object",
    "Out-String",
    "Start-Sleep",
    "Write-Output",
}


def parse_powershell(source: bytes):
    """The script's syntax tree (tree-sitter's PowerShell grammar)."""
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_powershell.language())).parse(source)


def nodes(node, kind: str):
    if node.type == kind:
        yield node
    for child in node.children:
        yield from nodes(child, kind)


def test_powershell_script_parses_and_calls_only_what_exists() -> None:
    source = PS_CLIENT.read_bytes()
    tree = parse_powershell(source)
    errors = [n for n in nodes(tree.root_node, "ERROR")]
    lines = source.decode().splitlines()
    assert not errors, [f"line {n.start_point[0] + 1}: {lines[n.start_point[0]].strip()}" for n in errors]

    def text(node) -> str:
        return source[node.start_byte : node.end_byte].decode()

    defined = {text(n) for n in nodes(tree.root_node, "function_name")}
    called = {text(n) for n in nodes(tree.root_node, "command_name")}
    assert called - defined - BUILTIN_CMDLETS == set(), "calls to functions that are not defined"
    assert defined - called == set(), "functions that are never called"

    # Every script-scope variable read is set somewhere.
    script_text = source.decode()
    read = set(re.findall(r"\$script:(\w+)", script_text))
    assigned = set(re.findall(r"\$script:(\w+)\s*=[^=]", script_text))
    assert read - assigned == set()


def test_powershell_client(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    script = PS_CLIENT.read_text(encoding="utf-8")
    commands = python_commands()

    declared = re.search(r"\$Commands = @\(([^)]*)\)", script)
    assert declared, "etlworks-agent.ps1 must declare its commands in $Commands"
    assert re.findall(r"'([a-z-]+)'", declared.group(1)) == commands
    for command in commands:
        assert re.search(rf"^    '{re.escape(command)}' \{{$", script, re.MULTILINE), (
            f"no handler for '{command}'"
        )

    ps_help = script.split('@"', 1)[1].split('"@', 1)[0]
    assert commands_section(ps_help) == commands_section(bash_help())
    for command in commands:
        assert any(line.split()[0] == command for line in commands_section(ps_help))

    # The same options, in the code and in the help, as the Python CLI and the bash script.
    ps_options = set(re.findall(r"'(--[a-z][a-z-]*)'", script))
    assert ps_options == python_options()
    assert options_in(ps_help) == options_in(bash_help()) == python_options()

    for variable in ("ETLWORKS_URL", "ETLWORKS_API_KEY"):
        assert f"$env:{variable}" in script
    assert "/rest/v1/ai-agent/api" in script
    assert "text/event-stream" in script and "ReadLine()" in script
    assert re.search(r"^\s*exit 2$", script, re.MULTILINE) and re.search(r"^\s*exit 1$", script, re.MULTILINE)

    if PWSH is not None:
        run_against_the_server(server)
        return
    with capsys.disabled():
        print(
            "\nPowerShell (pwsh) is not installed here, so etlworks-agent.ps1 was checked statically: "
            "it parses, calls only functions it defines or cmdlets of PowerShell 5.1 and 7, and offers "
            f"the same {len(commands)} commands, options ({', '.join(sorted(ps_options))}) and "
            "variables (ETLWORKS_URL, ETLWORKS_API_KEY) as the Python and bash clients; "
            "it runs against the server where pwsh is on PATH."
        )


def run_against_the_server(server: Server) -> None:
    """Every command of etlworks-agent.ps1 against the real server (where pwsh is installed)."""

    def ps(*args: str, key: Optional[str] = None, url: Optional[str] = None) -> subprocess.CompletedProcess:
        env = client_env(url or server.url, key or server.admin_key)
        return run([PWSH, "-NoProfile", "-NonInteractive", "-File", str(PS_CLIENT), *args], env)  # type: ignore[list-item]

    tools = ps("tools")
    assert tools.returncode == 0, tools.stderr
    assert "host_cli (agentic)" in tools.stdout
    assert json.loads(ps("--json", "tools").stdout)["count"] == 7
    listed = ps("tool", "host_cli", '{"command": "list connections"}')
    assert "warehouse" in listed.stdout
    bad = ps("tool", "search_knowledge_base", '{"query": ')
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr

    question = "how do I schedule a flow?"
    whole = json.loads(ps("--json", "chat", question).stdout)["response"]
    streamed = ps("chat-stream", question)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.replace("\r\n", "\n") == whole + "\n"
    assert "[tool search_knowledge_base" in streamed.stderr

    session_id = ps("session-create", "--title", "pwsh").stdout.strip()
    assert re.fullmatch(r"ses_[a-z0-9]+", session_id)
    assert ps("session-chat", session_id, "create a connection to api.example.com").returncode == 0
    second = ps("session-chat-stream", session_id, "schedule it every hour")
    assert "every 1h" in second.stdout
    assert "#1 user: create a connection to api.example.com" in ps("session-messages", session_id).stdout
    assert session_id in ps("session-list", "--limit", "1000").stdout
    assert ps("session-delete", session_id).returncode == 0
    gone = ps("session-messages", session_id)
    assert gone.returncode == 1 and "code session_not_found" in gone.stderr

    assert "HTTP 401" in ps("tools", key="A" * 256).stderr
    denied = ps("tool", "host_cli", '{"command": "list connections"}', key=server.keys["readonly"])
    assert denied.returncode == 1 and "HTTP 403" in denied.stderr
    down = ps("tools", url=f"http://127.0.0.1:{closed_port()}")
    assert down.returncode == 1 and "cannot connect to" in down.stderr
    no_url = run(
        [PWSH, "-NoProfile", "-NonInteractive", "-File", str(PS_CLIENT), "tools"],
        client_env(None, server.admin_key),
    )  # type: ignore[list-item]
    assert no_url.returncode == 2 and "ETLWORKS_URL is not set" in no_url.stderr
