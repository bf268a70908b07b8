"""Fake model servers for tests: real HTTP servers on 127.0.0.1 speaking the providers'
wire protocols (SSE streaming included), scripted per test.

    with FakeOpenAIServer() as server:
        server.plan(TextReply("Hello", chunks=3), ErrorReply(429, headers={"Retry-After": "1"}))
        ... server.base_url ...
        assert server.calls == 2
        assert server.requests[0].json["model"] == "gpt-test"

Each request takes the next planned response; with none left the server answers 500.
Every request is recorded (path, lower-cased headers, parsed JSON body).
"""

import abc
import contextlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class TextReply:
    """A streamed text answer, split into `chunks` deltas."""

    text: str
    chunks: int = 3
    delay: float = 0.0  # seconds before answering (the response headers included)
    usage: bool = True  # report usage (openai: only when the request asked for it)
    input_tokens: int = 11
    output_tokens: int = 7
    cached_tokens: int = 0
    cache_creation_tokens: int = 0  # anthropic only
    finish_reason: str | None = None  # None: the protocol's "stop"


@dataclass(frozen=True)
class ToolCallReply:
    """A streamed tool call (optionally after some text). `arguments` as a dict is sent
    as JSON; as a string it is sent verbatim (e.g. malformed JSON). Its JSON is streamed
    in `chunks` fragments. `more` adds further calls as (name, arguments, id) tuples."""

    name: str
    arguments: dict | str
    call_id: str | None = None  # None: call_1 / toolu_1
    text: str = ""
    chunks: int = 3
    more: tuple[tuple[str, dict | str, str], ...] = ()
    delay: float = 0.0
    usage: bool = True
    input_tokens: int = 20
    output_tokens: int = 9
    cached_tokens: int = 0
    cache_creation_tokens: int = 0

    def all_calls(self, default_prefix: str) -> list[tuple[str, str, str]]:
        """[(id, name, arguments JSON text)]"""
        calls = [(self.call_id or f"{default_prefix}1", self.name, self.arguments)]
        calls += [(call_id, name, arguments) for name, arguments, call_id in self.more]
        return [
            (call_id, name, args if isinstance(args, str) else json.dumps(args))
            for call_id, name, args in calls
        ]


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error. `body` None: the protocol's error body with `message` and `code`
    (openai: error.code; anthropic: error.type)."""

    status: int
    message: str = "fake error"
    code: str | None = None
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class DisconnectReply:
    """Start streaming `text` in `chunks` deltas, then close the socket abruptly right after
    the `after_chunks`-th delta (no end of the chunked body, no [DONE] / message_stop)."""

    text: str
    after_chunks: int = 1
    chunks: int = 4
    delay: float = 0.0
    clean: bool = False  # end the HTTP body properly instead: a stream that just stops


@dataclass(frozen=True)
class StreamErrorReply:
    """Start streaming `text` (200 OK), then send the protocol's in-stream error event
    (openai: `data: {"error": …}`; anthropic: `event: error`) and end the body."""

    text: str
    message: str = "fake stream error"
    code: str | None = None  # openai: error.code; anthropic: error.type (overloaded_error)
    chunks: int = 2
    delay: float = 0.0


Reply = TextReply | ToolCallReply | ErrorReply | DisconnectReply | StreamErrorReply


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: dict | None


def split(text: str, parts: int) -> list[str]:
    """`text` in `parts` pieces (fewer when it is shorter) that concatenate back to it."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


class _Aborted(Exception):
    """The server is stopping while a handler waits."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: "FakeServer"):
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client that went away (timeouts, aborted streams) is expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake._record(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                json=body,
            )
        )
        reply = fake._next_reply()
        try:
            if reply is None:
                self._send_json(500, fake.error_body(ErrorReply(500, "no planned response")))
                return
            if reply.delay and fake._stopping.wait(reply.delay):
                raise _Aborted()
            if self.path != fake.path:
                self._send_json(404, fake.error_body(ErrorReply(404, f"no route {self.path}")))
                return
            problem = fake.validate(body)
            if problem is not None:
                self._send_json(problem.status, fake.error_body(problem))
                return
            if isinstance(reply, ErrorReply):
                body_out = reply.body if reply.body is not None else fake.error_body(reply)
                self._send_json(reply.status, body_out, reply.headers)
                return
            self._stream(fake, reply, body)
        except (_Aborted, OSError):
            self.close_connection = True

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, fake: "FakeServer", reply: Reply, body: dict | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deltas = 0
        for frame, is_delta in fake.render(reply, body or {}):
            if fake._stopping.is_set():
                raise _Aborted()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            deltas += is_delta
            if isinstance(reply, DisconnectReply) and is_delta and deltas >= reply.after_chunks:
                if reply.clean:
                    break
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeServer(abc.ABC):
    """A scripted HTTP server in a background thread. Subclasses speak a protocol."""

    path = "/"

    def __init__(self):
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(self)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "FakeServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
        with self._httpd.sockets_lock:
            sockets = list(self._httpd.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url

    def plan(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            return self.requests[-1]

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    # -- protocol --------------------------------------------------------------------
    def validate(self, body: dict | None) -> ErrorReply | None:
        """An error to answer instead when the request breaks the protocol."""
        return None

    @abc.abstractmethod
    def error_body(self, reply: ErrorReply) -> dict:
        """The provider's JSON error body."""

    @abc.abstractmethod
    def render(self, reply: Reply, body: dict):
        """Yield (SSE frame bytes, is a content delta) for a streamed reply."""
