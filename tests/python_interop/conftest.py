"""Fixtures: the real etlworks-agent server on a free port with a temporary data directory.

The server binary is ``target/debug/etlworks-agent`` at the repository root (or the one named by
``ETLWORKS_AGENT_BIN``); ``scripts/test-interop`` builds it when it is missing. Keys are made with
the binary's own ``keys create`` command, as an operator would.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]


def agent_binary() -> Path:
    named = os.environ.get("ETLWORKS_AGENT_BIN")
    binary = Path(named) if named else REPO / "target" / "debug" / "etlworks-agent"
    if not binary.is_file():
        pytest.fail(
            f"the server binary {binary} does not exist; build it with "
            "'cargo build -p etlworks-agent' (scripts/test-interop does) or set ETLWORKS_AGENT_BIN",
            pytrace=False,
        )
    return binary


def server_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLWORKS_", "ETL_TEST_"))}
    env["ETLWORKS_AGENT_LOG"] = "warn"
    return env


@dataclass
class Server:
    """A running etlworks-agent and its admin key."""

    url: str
    data_dir: Path
    admin_key: str
    process: subprocess.Popen
    log_path: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/rest/v1/ai-agent/mcp"

    @property
    def api_url(self) -> str:
        return f"{self.url}/rest/v1/ai-agent/api"

    def create_key(self, name: str, role: str) -> str:
        done = subprocess.run(
            [str(agent_binary()), "--data-dir", str(self.data_dir), "keys", "create", "--name", name, "--role", role],
            capture_output=True,
            text=True,
            timeout=60,
            env=server_env(),
        )
        assert done.returncode == 0, f"keys create failed: {done.stderr}"
        return done.stdout.strip()

    def api(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, key: Optional[str] = None) -> Any:
        """One Agent API call (stdlib only, so the clients under test are the only ones used)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {key or self.admin_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def host(self, command: str) -> Dict[str, Any]:
        answer = self.api("POST", "/tools/host_cli/execute", {"command": command})
        assert answer["success"], answer
        return answer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(workdir: Path) -> Server:
    """Starts `etlworks-agent serve` on a free port and waits for its `listening on` line."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            # No rate limit: these tests send many requests with one key, and limits are tested in Rust.
            [str(agent_binary()), "--data-dir", str(data_dir), "serve", "--bind", "127.0.0.1:0", "--rate-limit", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=server_env(),
        )
    assert process.stdout is not None
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    seen: List[str] = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            raise RuntimeError(f"the server did not start: stdout {seen!r}, log:\n{log_path.read_text()}")
        seen.append(line.strip()[:120])
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].strip().split("/rest/", 1)[0]
            break
    admin_key = (data_dir / "admin.key").read_text().strip()
    return Server(url=url, data_dir=data_dir, admin_key=admin_key, process=process, log_path=log_path)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("interop"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def readonly_key(server: Server) -> str:
    return server.create_key("interop-readonly", "readonly")


class SlowApi:
    """A local REST API whose one endpoint answers after `delay` seconds, so a flow reading it
    keeps a run (and the agent's tool call) busy long enough to be cancelled."""

    def __init__(self, delay: float) -> None:
        delay_s = delay

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                time.sleep(delay_s)
                body = json.dumps([{"id": 1, "name": "slow"}]).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_api() -> Iterator[SlowApi]:
    api = SlowApi(delay=8.0)
    try:
        yield api
    finally:
        api.close()
