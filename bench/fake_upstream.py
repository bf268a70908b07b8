#!/usr/bin/env python
"""A fake OpenAI-compatible upstream for the benchmarks: a model that takes time.

    python bench/fake_upstream.py --port 9100 --tokens 40 --answer-seconds 2

`POST /v1/chat/completions` with `"stream": true` answers Server-Sent Events in the Chat
Completions chunk format, as OpenAI sends them (and as tests/fakes/openai_server.py does
for the tests): a first chunk with the role, `--tokens` chunks of one word each spread
evenly over `--answer-seconds` (0: all at once), a chunk with `finish_reason: "stop"`,
then, when the request asks `stream_options.include_usage`, a chunk with empty `choices`
and the usage, then `data: [DONE]`. Without `stream` it answers one `chat.completion`
after the same time. The words are drawn at random, so no two answers repeat each other
(the application's anti-echo would otherwise ask a second time).

`GET /stats` answers what it has served: requests, streams open now and at most, streams
completed and cut off by the client, how long the completed streams took (request in to
`[DONE]` written) and the latest a word went out after its time, CPU seconds of this
process; `POST /stats/reset` starts the counts again.

A plain ASGI app on uvicorn (uvloop and httptools when installed): one coroutine per
stream, no thread, so it holds thousands of streams at once. Standard library and
uvicorn only; it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
import uuid

_VOCABULARY = (
    "the order parcel delivery address invoice refund shipping warehouse stock courier "
    "tracking number customer account payment card statement return policy express "
    "standard business days week weekend office home Germany France Spain Italy Poland "
    "Austria Belgium kettle lamp chair backpack monitor grinder rug please thank you kindly "
    "check confirm update change cancel arrive arrives arrived today tomorrow soon late "
    "early label box damaged replaced exchanged price tax VAT total discount voucher code "
    "email phone support team agent human answer question sorry glad help we I can will "
    "should would could may might not yet already still also only just about around within"
)
WORDS = _VOCABULARY.split()

STARTED = time.time()


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams_open = 0
        self.streams_max = 0
        self.completed = 0
        self.disconnected = 0
        self.bad_requests = 0
        self.chunks = 0
        self.durations: list[float] = []  # seconds, request in -> [DONE] written
        self.late_s_max = 0.0  # the latest a word was written after its scheduled time

    def as_dict(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = sorted(self.durations)

        def q(p: float) -> float | None:
            return round(done[min(len(done) - 1, int(p * len(done)))], 4) if done else None

        return {
            **{k: v for k, v in vars(self).items() if k != "durations"},
            "stream_s": {"n": len(done), "p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "uptime_s": time.time() - STARTED,
        }


class FakeUpstream:
    """The ASGI application."""

    def __init__(self, tokens: int = 40, answer_seconds: float = 2.0, seed: int | None = None):
        self.tokens = max(1, tokens)
        self.answer_seconds = max(0.0, answer_seconds)
        self.rng = random.Random(seed)
        self.stats = Stats()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/stats" and method == "GET":
            return await self._json(send, 200, self.stats.as_dict())
        if path == "/stats/reset" and method == "POST":
            self.stats = Stats()
            return await self._json(send, 200, self.stats.as_dict())
        if path == "/v1/models" and method == "GET":
            return await self._json(
                send, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}
            )
        if path != "/v1/chat/completions":
            return await self._error(send, 404, f"no route {method} {scope['path']}", None)
        if method != "POST":
            return await self._error(send, 405, "POST only", None)
        self.stats.requests += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or "model" not in request or "messages" not in request:
            self.stats.bad_requests += 1
            return await self._error(send, 400, "model and messages are required", None)
        if request.get("stream") is True:
            return await self._stream(request, receive, send)
        return await self._complete(request, send)

    # --- answers ---------------------------------------------------------------------------

    def _words(self, request: dict) -> list[str]:
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        count = min(self.tokens, limit) if isinstance(limit, int) and limit > 0 else self.tokens
        choice = self.rng.choice
        words = [choice(WORDS) for _ in range(count)]
        words[0] = words[0].capitalize()
        words[-1] += "."
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @staticmethod
    def _usage(request: dict, completion_tokens: int) -> dict:
        chars = 0
        for message in request.get("messages") or ():
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):  # content parts
                chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
        prompt_tokens = max(1, (chars + 3) // 4)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    async def _stream(self, request: dict, receive, send) -> None:
        stats = self.stats
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        head = json.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": request["model"],
                "system_fingerprint": "fp_fake",
            }
        )[:-1]  # the common fields, without the closing brace: each chunk appends its own

        def chunk(choices: str, usage: dict | None = None) -> bytes:
            tail = f',"choices":{choices}'
            if include_usage:  # as OpenAI: "usage": null on every chunk but the last
                tail += f',"usage":{json.dumps(usage)}'
            return f"data: {head}{tail}}}\n\n".encode()

        def choice(delta: dict, finish_reason: str | None = None) -> str:
            return json.dumps(
                [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ]
            )

        words = self._words(request)
        started = time.monotonic()
        # A client that goes away ends the stream at the next write (uvicorn drops writes
        # to a closed connection): watch for http.disconnect to stop early and count it.
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        stats.streams_open += 1
        stats.streams_max = max(stats.streams_max, stats.streams_open)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-request-id", f"req_{uuid.uuid4().hex[:24]}".encode()),
                    ],
                }
            )
            first = chunk(choice({"role": "assistant", "content": ""}))
            if self.answer_seconds == 0:
                pieces = [first] + [chunk(choice({"content": w})) for w in words]
                await send(
                    {"type": "http.response.body", "body": b"".join(pieces), "more_body": True}
                )
                stats.chunks += len(pieces)
            else:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                stats.chunks += 1
                # Evenly spread over answer_seconds, on an absolute schedule (no drift): the
                # i-th word at t0 + (i + 1) * step, the last one at t0 + answer_seconds.
                loop = asyncio.get_running_loop()
                step = self.answer_seconds / len(words)
                t0 = loop.time()
                for i, word in enumerate(words):
                    delay = t0 + (i + 1) * step - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        stats.late_s_max = max(stats.late_s_max, -delay)
                    if gone.is_set():
                        stats.disconnected += 1
                        return
                    await send(
                        {
                            "type": "http.response.body",
                            "body": chunk(choice({"content": word})),
                            "more_body": True,
                        }
                    )
                    stats.chunks += 1
            tail = chunk(choice({}, "stop"))
            if include_usage:
                tail += chunk("[]", self._usage(request, len(words)))
            tail += b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            stats.chunks += 1 + include_usage
            stats.completed += 1
            stats.durations.append(time.monotonic() - started)
        finally:
            stats.streams_open -= 1
            watcher.cancel()

    async def _complete(self, request: dict, send) -> None:
        words = self._words(request)
        if self.answer_seconds:
            await asyncio.sleep(self.answer_seconds)
        self.stats.completed += 1
        await self._json(
            send,
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(request, len(words)),
            },
        )

    @staticmethod
    async def _json(send, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send, status: int, message: str, code: str | None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}
        await self._json(send, status, {"error": error})


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=40, help="words (chunks) per answer")
    parser.add_argument(
        "--answer-seconds",
        type=float,
        default=2.0,
        help="seconds over which the words are spread (0: as fast as possible)",
    )
    parser.add_argument("--seed", type=int, default=None, help="of the words drawn")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fake upstream listens on the loopback interface only")
    raise_nofile_limit()

    import uvicorn

    app = FakeUpstream(args.tokens, args.answer_seconds, args.seed)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        backlog=4096,
        # Longer than the clients' keep-alive (httpx: 5 s), so the client closes an idle
        # connection first and never sends on one the server is closing.
        timeout_keep_alive=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
