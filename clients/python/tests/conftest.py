"""Fixtures: the real etlworks-agent server on a free port with a temporary data directory.

The server binary is ``target/debug/etlworks-agent`` at the repository root (or the one named by
``ETLWORKS_AGENT_BIN``); ``scripts/test-clients`` builds it when it is missing. Keys are made
with the binary's own ``keys create`` command, as an operator would.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
CLIENTS = REPO / "clients"
PYTHON_SRC = CLIENTS / "python"
BASH_CLIENT = CLIENTS / "etlworks-agent.sh"
PS_CLIENT = CLIENTS / "etlworks-agent.ps1"

# The tests must exercise this checkout's client, whatever else is installed.
if str(PYTHON_SRC) not in sys.path:
    sys.path.insert(0, str(PYTHON_SRC))


def agent_binary() -> Path:
    """The server binary to test against."""
    named = os.environ.get("ETLWORKS_AGENT_BIN")
    binary = Path(named) if named else REPO / "target" / "debug" / "etlworks-agent"
    if not binary.is_file():
        pytest.fail(
            f"the server binary {binary} does not exist; build it with "
            "'cargo build -p etlworks-agent' (scripts/test-clients does) or set ETLWORKS_AGENT_BIN",
            pytrace=False,
        )
    return binary


@dataclass
class Server:
    """A running etlworks-agent server and keys for it."""

    url: str
    data_dir: Path
    admin_key: str
    process: subprocess.Popen
    log_path: Path
    keys: Dict[str, str] = field(default_factory=dict)

    def create_key(self, name: str, role: str, tenant: Optional[str] = None) -> str:
        """Creates a key with the binary's `keys create` command and returns it."""
        command = [
            str(agent_binary()),
            "--data-dir",
            str(self.data_dir),
            "keys",
            "create",
            "--name",
            name,
            "--role",
            role,
        ]
        if tenant:
            command += ["--tenant", tenant]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env())
        assert done.returncode == 0, f"keys create failed: {done.stderr}"
        key = done.stdout.strip()
        assert len(key) == 256, f"unexpected key output: {done.stdout!r}"
        return key

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def server_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLWORKS_", "ETL_TEST_"))}
    env["ETLWORKS_AGENT_LOG"] = "warn"
    return env


def start_server(workdir: Path, *extra: str) -> Server:
    """Starts `etlworks-agent serve` on a free port; waits for its `listening on` line."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    log_path = workdir / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [str(agent_binary()), "--data-dir", str(data_dir), "serve", "--bind", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env=server_env(),
    )
    log.close()
    assert process.stdout is not None
    # A thread reads the server's output (so it never blocks on a full pipe) and hands over lines.
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    url = None
    seen: List[str] = []
    while url is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            raise RuntimeError(
                f"the server did not start: stdout {seen!r}, log:\n{log_path.read_text(errors='replace')}"
            )
        seen.append(line.strip()[:120])
        if "listening on http://" in line:
            address = line.split("listening on ", 1)[1].strip()
            url = address.split("/rest/", 1)[0]
    admin_key = (data_dir / "admin.key").read_text().strip()
    return Server(url=url, data_dir=data_dir, admin_key=admin_key, process=process, log_path=log_path)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server most tests share (no rate limit), with a read-only and a second-tenant key."""
    running = start_server(tmp_path_factory.mktemp("server"), "--rate-limit", "0")
    try:
        running.keys["readonly"] = running.create_key("pytest readonly", "readonly")
        running.keys["other"] = running.create_key("pytest other tenant", "user", tenant="other-tenant")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that allows one request per second per key after a burst of two."""
    running = start_server(tmp_path_factory.mktemp("limited"), "--rate-limit", "1", "--rate-burst", "2")
    try:
        yield running
    finally:
        running.stop()


def closed_port() -> int:
    """A local port nobody listens on (for 'server down')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(url: Optional[str], key: Optional[str], path: Optional[str] = None) -> Dict[str, str]:
    """The environment a client command runs with: only what it is given, plus the basics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLWORKS_")}
    env["PYTHONPATH"] = str(PYTHON_SRC)
    env["PYTHONIOENCODING"] = "utf-8"
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    if path is not None:
        env["PATH"] = path
    if url is not None:
        env["ETLWORKS_URL"] = url
    if key is not None:
        env["ETLWORKS_API_KEY"] = key
    return env


def run(
    command: List[str], env: Dict[str, str], cwd: Optional[Path] = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        env=env,
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def path_without_jq(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with every program of the real PATH except jq (links in a temporary folder)."""
    folder = tmp_path_factory.mktemp("path-without-jq")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            if entry == "jq" or (folder / entry).exists():
                continue
            target = os.path.join(directory, entry)
            if os.path.isfile(target) and os.access(target, os.X_OK):
                (folder / entry).symlink_to(target)
    path = str(folder)
    assert shutil.which("jq", path=path) is None
    assert shutil.which("curl", path=path) is not None, "curl is needed by etlworks-agent.sh"
    return path
