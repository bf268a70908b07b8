#!/usr/bin/env python
"""Checks bench/fake_upstream.py with the official openai SDK.

    .venv/bin/python bench/fake_upstream_check.py                     # 1 stream, then 1000
    .venv/bin/python bench/fake_upstream_check.py --streams 1000 --answer-seconds 2

Starts the fake upstream on a free port (or uses --base-url), streams one answer with
`openai.OpenAI` and prints its text and usage, then opens --streams streams at once with
`openai.AsyncOpenAI` and prints how long they took and the CPU the server used.

The SDK parses each chunk into pydantic models, about 0.4 ms of CPU a chunk here: 1000
streams of 40 words in 2 s are 20 CPU s for one client process, so at that rate the
client, not the server, sets the pace (the server's own times say when it wrote). With
`--answer-seconds 30` one client process keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(base_url: str, reset: bool = False) -> dict:
    url = base_url.removesuffix("/v1") + ("/stats/reset" if reset else "/stats")
    with urllib.request.urlopen(url, data=b"" if reset else None, timeout=5) as r:
        return json.load(r)


def one_stream(base_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model="fake",
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "Where is my parcel?"},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish, chunks, first = [], None, None, 0, None
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                first = first or time.perf_counter()
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    elapsed = time.perf_counter() - t0
    print(f"text: {''.join(text)!r}")
    print(f"usage: {usage.model_dump() if usage else None}")
    print(
        f"finish_reason {finish}, {chunks} chunks, first token after "
        f"{((first or t0) - t0) * 1000:.0f} ms, all in {elapsed * 1000:.0f} ms"
    )
    assert usage is not None and finish == "stop" and text, "incomplete stream"


async def many_streams(base_url: str, n: int) -> None:
    import httpx2
    import openai

    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="x",
        max_retries=0,
        timeout=httpx2.Timeout(120, connect=60, pool=60),
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n)
        ),
    )
    failures: dict[str, int] = {}

    async def one(i: int) -> tuple[float, int] | None:
        t0 = time.perf_counter()
        try:
            stream = await client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": f"question {i}"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            tokens, usage = 0, None
            async for chunk in stream:
                usage = chunk.usage or usage
                tokens += sum(1 for c in chunk.choices if c.delta and c.delta.content)
        except Exception as exc:  # noqa: BLE001 (counted)
            key = f"{type(exc).__name__}: {exc}"[:100]
            failures[key] = failures.get(key, 0) + 1
            return None
        assert usage is not None and usage.completion_tokens == tokens, (usage, tokens)
        return time.perf_counter() - t0, tokens

    before = stats(base_url, reset=True)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    after = stats(base_url)
    await client.close()
    done = sorted(r[0] for r in results if r)
    print(
        f"{n} concurrent AsyncOpenAI streams: {len(done)} completed, failures "
        f"{failures or 'none'}; wall {wall:.2f} s"
    )
    if done:
        q = statistics.quantiles(done, n=100) if len(done) > 1 else [done[0]] * 99
        print(
            f"  per stream s: min {done[0]:.2f}, p50 {q[49]:.2f}, p99 {q[98]:.2f}, "
            f"max {done[-1]:.2f}; tokens each {results[0][1] if results[0] else '-'}"
        )
    cpu = after["cpu_s"] - before["cpu_s"]
    print(
        f"  server: {cpu:.2f} CPU s ({cpu / wall * 100:.0f}% of a core over the wall time, "
        f"{cpu / max(1, len(done)) * 1000:.2f} ms a stream), streams open at most "
        f"{after['streams_max']}, chunks {after['chunks'] - before['chunks']}"
    )
    s = after["stream_s"]
    print(
        f"  server side, request in -> [DONE] written: p50 {s['p50']} s, p99 {s['p99']} s, "
        f"max {s['max']} s; a word at most {after['late_s_max'] * 1000:.0f} ms late"
    )
    print(f"  client (the SDK, one process): {client_cpu:.2f} CPU s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-url", help="an upstream already running, e.g. http://127.0.0.1:9100/v1"
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--answer-seconds", type=float, default=2.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = None
    base_url = args.base_url
    if not base_url:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        server = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fake_upstream.py"),
                "--port",
                str(port),
                "--tokens",
                str(args.tokens),
                "--answer-seconds",
                str(args.answer_seconds),
            ],
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                stats(base_url)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        one_stream(base_url)
        if args.streams:
            asyncio.run(many_streams(base_url, args.streams))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
