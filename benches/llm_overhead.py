#!/usr/bin/env python3
"""What the server adds to a provider's stream (issue 5's benchmark; driven by benches/llm.sh).

bench-api plays an OpenAI-compatible model that streams --tokens text chunks, the first after
--first-ms, then one every --interval-ms. The same asyncio client then measures, at 1 and at
--concurrency streams at once:

- straight from that provider: POST /v1/chat/completions (stream), time to the first content
  chunk and to `data: [DONE]`;
- through `etlworks-agent serve --llm openai --llm-base-url <it>`: POST /chat/stream, time to
  the first `token` event and to `done`.

The difference of the first-token times is the overhead the server adds (auth, the agent loop,
the provider request it builds, re-encoding every chunk as our SSE). Tokens/s is per stream,
chunks after the first over the time from the first to the last.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_bench as common  # noqa: E402

BASE = common.BASE


async def read_stream(host, port, path, headers, body, first_marker, end_marker):
    """POSTs `body` and reads the (chunked) SSE answer line by line. Answers seconds to the first
    data line containing `first_marker`, seconds to the one containing `end_marker`, and how many
    lines contained `first_marker`."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    started = time.perf_counter()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"{path} answered {status!r}: {await reader.read(500)!r}")
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True

    async def pieces():
        if not chunked:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                yield data
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    first = end = None
    count = 0
    pending = b""
    async for data in pieces():
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            if first_marker in line:
                count += 1
                if first is None:
                    first = time.perf_counter() - started
            if end_marker in line:
                end = time.perf_counter() - started
                break
        if end is not None:
            break
    writer.close()
    if first is None or end is None:
        raise SystemExit(f"{path}: the stream ended without its first chunk and end")
    return first, end, count


async def measure(kind, concurrency, rounds, provider, server, key, tokens):
    if kind == "direct":
        host, port = provider
        call = lambda: read_stream(  # noqa: E731
            host, port, "/v1/chat/completions", {"Authorization": "Bearer sk-bench"},
            {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hello"}]},
            b'"content"', b"[DONE]",
        )
    else:
        host, port = server
        call = lambda: read_stream(  # noqa: E731
            host, port, f"{BASE}/chat/stream", {"Authorization": f"Bearer {key}"},
            {"message": "hello"}, b'"type":"token"', b'"type":"done"',
        )
    firsts, rates = [], []
    wall_tokens, wall = 0, 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        results = await asyncio.gather(*(call() for _ in range(concurrency)))
        wall += time.perf_counter() - started
        for first, end, count in results:
            if count != tokens:
                raise SystemExit(f"{kind}: {count} chunks arrived, {tokens} were sent")
            firsts.append(first * 1000)
            rates.append((count - 1) / (end - first))
            wall_tokens += count
    return {
        "first_p50_ms": statistics.median(firsts),
        "first_p99_ms": common.percentile(firsts, 99),
        "tokens_per_s_per_stream": statistics.median(rates),
        "tokens_per_s_total": wall_tokens / wall,
        "streams": len(firsts),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/etlworks-agent")
    ap.add_argument("--bench-api", default="target/release/bench-api")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--first-ms", type=int, default=20)
    ap.add_argument("--interval-ms", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=100, help="streams measured one at a time")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --concurrency streams")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="etl-llm-bench-")
    procs = []
    try:
        with open(f"{work}/one.ndjson", "w") as f:
            f.write('{"id": 1}\n')
        provider, phost, pport = common.start(
            [args.bench_api, "--ndjson", f"{work}/one.ndjson", "--page-size", "1",
             "--llm-tokens", str(args.tokens), "--llm-first-token-ms", str(args.first_ms),
             "--llm-interval-ms", str(args.interval_ms)]
        )
        procs.append(provider)
        env = dict(os.environ, OPENAI_API_KEY="sk-bench")
        server, host, port = common.start(
            [args.bin, "--data-dir", f"{work}/data", "--log", "warn", "serve", "--bind", "127.0.0.1:0",
             "--rate-limit", "0", "--llm", "openai", "--llm-base-url", f"http://{phost}:{pport}/v1",
             "--llm-model", "fake"],
            env=env,
        )
        procs.append(server)
        key = open(f"{work}/data/admin.key").read().strip()
        figures = {}

        async def run_all():
            # Warm both paths (connections, the tokenizer) before measuring.
            for kind in ("direct", "server"):
                await measure(kind, 4, 1, (phost, pport), (host, port), key, args.tokens)
            for concurrency, rounds in ((1, args.sequential), (args.concurrency, args.rounds)):
                for kind in ("direct", "server"):
                    name = f"{kind} x{concurrency}"
                    common.say(name)
                    figures[name] = await measure(
                        kind, concurrency, rounds, (phost, pport), (host, port), key, args.tokens
                    )

        asyncio.run(run_all())
    finally:
        for p in procs:
            common.stop(p)

    print()
    print(f"provider: {args.tokens} chunks, first after {args.first_ms} ms, then every {args.interval_ms} ms")
    print()
    print("| streams at once | path | first token p50 | first token p99 | added at p50 | tokens/s per stream | tokens/s total |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in (1, args.concurrency):
        d = figures[f"direct x{concurrency}"]
        s = figures[f"server x{concurrency}"]
        for kind, f in (("straight from the provider", d), ("through etlworks-agent", s)):
            added = "" if f is d else f"{s['first_p50_ms'] - d['first_p50_ms']:+.2f} ms"
            print(f"| {concurrency} | {kind} | {f['first_p50_ms']:.2f} ms | {f['first_p99_ms']:.2f} ms | {added} | "
                  f"{f['tokens_per_s_per_stream']:.0f} | {f['tokens_per_s_total']:.0f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
