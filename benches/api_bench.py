#!/usr/bin/env python3
"""The Agent API benchmark (driven by benches/api.sh; see benches/README.md).

Starts the release `etlworks-agent serve` on a free port with a fresh data directory (rate limit
off, the hidden `--hello-route` on), then measures, in one run on this machine:

1. resident memory (VmRSS) when idle, right after the start;
2. requests/s and latency percentiles with wrk for `GET /hello` (axum hello-world in the same
   process: the ceiling), `GET /tools`, and `POST /tools/search_knowledge_base/execute`;
3. time to the first `token` event (and to `done`) of `POST /chat/stream`, sequentially, for a
   knowledge question (a tool call, then the answer) and a direct answer;
4. resident memory with N streams open at once, each waiting on a tool (a connection test
   against bench-api's `GET /slow`, which answers after minutes), then after they are closed.

Prints a table; `--json-out FILE` also writes the figures.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BASE = "/rest/v1/ai-agent/api"


def say(*parts):
    print("[api_bench]", *parts, file=sys.stderr, flush=True)


def rss_mib(pid):
    """VmRSS and VmHWM of a process in MiB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fields[key] = value.strip()
    kib = lambda k: int(fields[k].split()[0]) / 1024  # noqa: E731
    return kib("VmRSS"), kib("VmHWM"), int(fields["Threads"])


def start(cmd, env=None):
    """Starts a process that prints 'listening on http://HOST:PORT...' on stdout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{cmd[0]} exited before listening")
        m = re.search(r"listening on http://([0-9.]+):(\d+)", line)
        if m:
            return proc, m.group(1), int(m.group(2))
    raise SystemExit(f"{cmd[0]} did not start within 60 s")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def request(host, port, method, path, key=None, body=None):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(url, key, seconds, connections, threads, body=None):
    """Runs wrk (after a 2 s warm-up) and answers requests/s, latency percentiles in ms, errors."""
    script = None
    args = ["wrk", f"-t{threads}", f"-c{connections}", "--latency"]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script.close()
        args += ["-s", script.name]
    try:
        subprocess.run(args + ["-d2s", url], check=True, capture_output=True, text=True)
        out = subprocess.run(args + [f"-d{seconds}s", url], check=True, capture_output=True, text=True).stdout
    finally:
        if script:
            os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {p: float(v) * unit[u] for p, v, u in WRK_LATENCY.findall(out)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if bad:
        raise SystemExit(f"wrk saw {bad.group(1)} error answers from {url}:\n{out}")
    return {"rps": rate, "p50_ms": lat["50"], "p99_ms": lat["99"], "socket_errors": errors.group(0) if errors else None}


def stream_once(host, port, key, message):
    """One /chat/stream: seconds to the first token event and to the done event."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    body = json.dumps({"message": message})
    started = time.perf_counter()
    conn.request(
        "POST",
        f"{BASE}/chat/stream",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"/chat/stream answered {resp.status}: {resp.read()[:300]!r}")
    first = done = None
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data:"):
            continue
        event = json.loads(line[5:])
        if event["type"] == "token" and first is None:
            first = time.perf_counter() - started
        if event["type"] in ("done", "error"):
            if event["type"] == "error":
                raise SystemExit(f"the stream failed: {event}")
            done = time.perf_counter() - started
            break
    conn.close()
    if first is None or done is None:
        raise SystemExit("the stream ended without a token and done")
    return first, done


def count_connections(pid, port):
    """Established TCP connections of `pid` to local `port` (the tool calls in flight)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def open_streams(host, port, key, count, message):
    """Opens `count` streams; answers once each has shown its tool_start, with the writers."""

    async def one():
        reader, writer = await asyncio.open_connection(host, port)
        body = json.dumps({"message": message}).encode()
        writer.write(
            (
                f"POST {BASE}/chat/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise SystemExit("a stream closed before its tool started")
            if line.startswith(b"data:") and b'"tool_start"' in line:
                return writer
            if line.startswith(b"data:") and b'"type":"error"' in line:
                raise SystemExit(f"a stream failed: {line!r}")

    writers = []
    for start_at in range(0, count, 100):  # in waves, so the listen backlog is never the limit
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start_at))))
    return writers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/etlworks-agent")
    ap.add_argument("--bench-api", default="target/release/bench-api")
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration per target")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--streams", type=int, default=1000, help="streams held open at once")
    ap.add_argument("--ttft-runs", type=int, default=200, help="sequential streams per message")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (benches/api.sh installs it)")

    work = tempfile.mkdtemp(prefix="etl-api-bench-")
    figures = {}
    server = slow = None
    try:
        server, host, port = start(
            [args.bin, "--data-dir", f"{work}/data", "--log", "warn", "serve", "--bind", "127.0.0.1:0",
             "--rate-limit", "0", "--hello-route", "--max-connections", "20000"]
        )
        key = open(f"{work}/data/admin.key").read().strip()
        root = f"http://{host}:{port}"
        time.sleep(2)
        rss, hwm, threads = rss_mib(server.pid)
        figures["idle"] = {"rss_mib": rss, "peak_mib": hwm, "threads": threads}
        say(f"idle: {rss:.1f} MiB resident, {threads} threads")

        kb_body = {"query": "how do I schedule a flow every hour", "limit": 5}
        status, answer = request(host, port, "POST", f"{BASE}/tools/search_knowledge_base/execute", key, kb_body)
        assert status == 200 and answer["success"], answer
        for name, url, body, needs_key in [
            ("GET /hello (axum hello-world)", f"{root}/hello", None, False),
            ("GET /tools", f"{root}{BASE}/tools", None, True),
            ("POST search_knowledge_base", f"{root}{BASE}/tools/search_knowledge_base/execute", kb_body, True),
        ]:
            say(f"wrk: {name}")
            figures[name] = wrk(url, key if needs_key else None, args.seconds, args.connections, args.threads, body)
            say(f"  {figures[name]['rps']:.0f} req/s, p99 {figures[name]['p99_ms']:.2f} ms")
        rss, hwm, threads = rss_mib(server.pid)
        figures["after load"] = {"rss_mib": rss, "peak_mib": hwm, "threads": threads}

        for label, message in [
            ("knowledge question", "how do I schedule a flow every hour?"),
            ("direct answer", "what can you do?"),
        ]:
            firsts, dones = [], []
            for _ in range(args.ttft_runs):
                first, done = stream_once(host, port, key, message)
                firsts.append(first * 1000)
                dones.append(done * 1000)
            figures[f"stream: {label}"] = {
                "first_token_p50_ms": statistics.median(firsts),
                "first_token_p99_ms": percentile(firsts, 99),
                "done_p50_ms": statistics.median(dones),
                "done_p99_ms": percentile(dones, 99),
            }
            say(f"stream ({label}): first token p50 {statistics.median(firsts):.2f} ms")

        rss, hwm, threads = rss_mib(server.pid)
        figures["after streams"] = {"rss_mib": rss, "peak_mib": hwm, "threads": threads}

        # N streams held open, each waiting on a tool call.
        ndjson = f"{work}/one.ndjson"
        with open(ndjson, "w") as f:
            f.write('{"id": 1}\n')
        slow, shost, sport = start([args.bench_api, "--ndjson", ndjson, "--page-size", "1"])
        status, answer = request(
            host, port, "POST", f"{BASE}/tools/host_cli/execute", key,
            {"command": f"create connection slow type=http url=http://{shost}:{sport}/slow?ms=600000 timeout=15m max_retries=0"},
        )
        assert status == 200 and answer["success"], answer
        before = rss_mib(server.pid)

        async def hold():
            started = time.perf_counter()
            writers = await open_streams(host, port, key, args.streams, "test connection slow")
            opened = time.perf_counter() - started
            await asyncio.sleep(2)
            during = rss_mib(server.pid)
            upstream = count_connections(server.pid, sport)
            for w in writers:
                w.close()
            await asyncio.sleep(5)
            left = count_connections(server.pid, sport)
            return opened, during, upstream, left

        opened, during, upstream, left = asyncio.run(hold())
        after = rss_mib(server.pid)
        figures["open streams"] = {
            "streams": args.streams,
            "opened_in_s": opened,
            "rss_before_mib": before[0],
            "rss_open_mib": during[0],
            "rss_after_close_mib": after[0],
            "per_stream_kib": (during[0] - before[0]) * 1024 / args.streams,
            "threads_open": during[2],
            "tool_requests_open": upstream,
            "tool_requests_left_after_close": left,
        }
        if left:
            raise SystemExit(f"{left} tool requests were still open after their streams closed")
        say(f"{args.streams} open streams: {during[0]:.1f} MiB resident")
        status, health = request(host, port, "GET", "/health")
        assert status == 200, health
    finally:
        for p in (server, slow):
            if p:
                stop(p)
        shutil.rmtree(work, ignore_errors=True)

    hello = figures["GET /hello (axum hello-world)"]["rps"]
    print()
    print("| route | requests/s | % of hello-world | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name in ["GET /hello (axum hello-world)", "GET /tools", "POST search_knowledge_base"]:
        f = figures[name]
        print(f"| {name} | {f['rps']:.0f} | {100 * f['rps'] / hello:.0f}% | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} |")
    print()
    print("| stream | first token p50 | first token p99 | done p50 | done p99 |")
    print("|---|---|---|---|---|")
    for label in ["knowledge question", "direct answer"]:
        f = figures[f"stream: {label}"]
        print(f"| {label} | {f['first_token_p50_ms']:.2f} ms | {f['first_token_p99_ms']:.2f} ms | "
              f"{f['done_p50_ms']:.2f} ms | {f['done_p99_ms']:.2f} ms |")
    print()
    o = figures["open streams"]
    print("| memory | resident |")
    print("|---|---|")
    print(f"| idle after start | {figures['idle']['rss_mib']:.1f} MiB |")
    print(f"| idle after the wrk runs | {figures['after load']['rss_mib']:.1f} MiB (peak {figures['after load']['peak_mib']:.1f}) |")
    print(f"| idle after the sequential streams (tokenizer loaded) | {figures['after streams']['rss_mib']:.1f} MiB |")
    print(f"| {o['streams']} streams open, each waiting on a tool | {o['rss_open_mib']:.1f} MiB "
          f"({o['per_stream_kib']:.0f} KiB per stream; opened in {o['opened_in_s']:.1f} s) |")
    print(f"| after they closed (tool requests still open: {o['tool_requests_left_after_close']}) | {o['rss_after_close_mib']:.1f} MiB |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
