"""A fake OpenAI-compatible Chat Completions server for tests, run as a process of its own.

It replays scripted answers to `POST /v1/chat/completions` (any status, headers, body and
delay) and records every request, so tests assert on what the model
was sent. A script is chosen per request by a marker the test controls: a substring of the
request's first user message (for example the subtask's description) or its model name,
so parallel subtasks of one plan each get their own answers.

    python -m tests.fakes.openai_server --port 0     # prints "listening on http://127.0.0.1:<port>"

A request with `"stream": true` gets a scripted completion in the official wire format:
`data: {chunk}` lines (the text in pieces of `chunk_chars`, each tool call's name then its
arguments in pieces, `chunk_delay_s` apart), a chunk with the usage when
`stream_options.include_usage` asks for it, then `data: [DONE]`. `cut_after: N` closes the
connection after N chunks, mid-answer; `error_after: N` sends an error event there instead.
The time each chunk was written is recorded with the request (`chunks`: `[[text, at], ...]`).
Other answers (errors) go out as they are.

Control endpoints: `POST /_script` with `{"match": <marker or null for any request>,
"answers": [{"status", "headers", "delay_s", "body"}, ...]}` appends answers to that
marker's script; `GET /_requests` returns the recorded requests (`path`, `headers`,
`body`, `match`: the marker that answered, `at`: when it arrived, `concurrent`: how many
requests answered by the same marker were in flight then, itself included); `POST /_reset`
forgets scripts and requests. A 429 is scripted like any answer:
`reply(status=429, headers={"Retry-After": "2"})`.

Fixtures: `openai_server` (session: the process, on a free port) and `fake_openai` (the
same server, reset for the test). Register them with
`pytest_plugins = ["tests.fakes.openai_server"]`; another fixture (a worker cluster, say)
depends on `openai_server` and points EXECUTION_AGENTS_FILE at `write_agents_file(...)`,
in the workers' environment and in the test process's settings alike (plans are validated
against the agents of the process that submits them).
"""

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fake-model"
_ids = itertools.count(1)


# --- building answers (used by tests) ---------------------------------------------------


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None) -> dict[str, Any]:
    """Return one tool call of a model answer; a string `arguments` is sent as it is (even if not JSON)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": id or f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": text}}


def completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    model: str = MODEL,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    """Return a chat completion's body: a final answer (`content`) or an answer with tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"},
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def reply(
    body: Any = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    delay_s: float = 0,
    chunk_chars: int = 4,
    chunk_delay_s: float = 0,
    cut_after: int | None = None,
    error_after: int | None = None,
) -> dict[str, Any]:
    """Return a scripted answer: any JSON (or text) body, with a status, headers and a delay.

    When the request streams, a completion body is sent in chunks of `chunk_chars` characters,
    `chunk_delay_s` apart, cut off after `cut_after` chunks when given, or followed by an
    error event after `error_after` chunks.
    """
    return {
        "status": status,
        "headers": headers or {},
        "delay_s": delay_s,
        "body": body,
        "stream": {
            "chunk_chars": chunk_chars,
            "chunk_delay_s": chunk_delay_s,
            "cut_after": cut_after,
            "error_after": error_after,
        },
    }


class FakeOpenAI:
    """A handle on a running fake server: script answers, read requests, reset."""

    def __init__(self, url: str, process: subprocess.Popen | None = None) -> None:
        self.url = url
        self.base_url = f"{url}/v1"
        self.process = process

    @classmethod
    def start(cls, log: Path | None = None, timeout: float = 30) -> "FakeOpenAI":
        """Start the server as a process on a free port and return its handle once it listens."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log.open("wb") if log else subprocess.DEVNULL,
            text=True,
        )
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline() if process.stdout else ""))
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0].startswith("listening on "):
            process.kill()
            raise RuntimeError(f"The fake OpenAI server did not start: {ready}")
        return cls(ready[0].removeprefix("listening on ").strip(), process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def script(self, *answers: dict[str, Any], match: str | None = None) -> None:
        """Queue answers for requests whose first user message contains `match` (or whose model is it).

        An answer is a `reply(...)` or a bare completion body (`completion(...)`).
        """
        wrapped = [answer if "choices" not in answer else reply(answer) for answer in answers]
        requests.post(f"{self.url}/_script", json={"match": match, "answers": wrapped}, timeout=10).raise_for_status()

    def requests(self, match: str | None = None) -> list[dict[str, Any]]:
        """Return the chat requests received so far, oldest first (only those answered by `match`'s script)."""
        received = requests.get(f"{self.url}/_requests", timeout=10).json()
        return [request for request in received if match is None or request["match"] == match]

    def reset(self) -> None:
        requests.post(f"{self.url}/_reset", timeout=10).raise_for_status()

    def agent_definition(self, **options: Any) -> dict[str, Any]:
        """Return an EXECUTION_AGENTS_FILE definition of an openai agent talking to this server."""
        return {"kind": "openai", "base_url": self.base_url, "model": MODEL, **options}


def write_agents_file(path: Path, agents: dict[str, dict[str, Any]]) -> Path:
    """Write an EXECUTION_AGENTS_FILE with these definitions and return its path."""
    path.write_text(json.dumps(agents, indent=2))
    return path


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory) -> Iterator[FakeOpenAI]:
    """The fake server's process, on a free port, for the whole session."""
    server = FakeOpenAI.start(log=tmp_path_factory.mktemp("fake-openai") / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_openai(openai_server) -> FakeOpenAI:
    """The fake server with no scripts and no requests recorded."""
    openai_server.reset()
    return openai_server


# --- the server ------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scripts: dict[str | None, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.in_flight: dict[str | None, int] = {}

    def next_answer(self, body: Any) -> tuple[str | None, dict[str, Any] | None]:
        first_user = ""
        model = body.get("model") if isinstance(body, dict) else None
        messages = body.get("messages") if isinstance(body, dict) else None
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict) and message.get("role") == "user":
                first_user = str(message.get("content"))
                break
        with self.lock:
            # Markers first, in the order they were scripted; the catch-all (None) last.
            for match in sorted(self.scripts, key=lambda key: key is None):
                answers = self.scripts[match]
                if answers and (match is None or match in first_user or match == model):
                    return match, answers.pop(0)
        return None, None


class _Handler(BaseHTTPRequestHandler):
    state = _State()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        content_type = "text/plain" if isinstance(body, str) else "application/json"
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        # The client may have given up already (a timeout test).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(payload)

    def _body(self) -> Any:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(data) if data else None
        except ValueError:
            return data.decode(errors="replace")

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with self.state.lock:
                self._send(200, list(self.state.requests))
        else:
            self._send(404, {"error": {"message": f"no such path {self.path}"}})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_reset":
            with self.state.lock:
                self.state.scripts.clear()
                self.state.requests.clear()
                self.state.in_flight.clear()
            self._send(200, {"ok": True})
        elif self.path == "/_script":
            with self.state.lock:
                self.state.scripts.setdefault(body.get("match"), []).extend(body["answers"])
            self._send(200, {"ok": True})
        elif self.path.rstrip("/").endswith("/chat/completions"):
            self._chat(body)
        else:
            self._send(404, {"error": {"message": f"no such path {self.path}"}})

    def _chat(self, body: Any) -> None:
        match, answer = self.state.next_answer(body)
        record = {"path": self.path, "headers": {}, "body": body, "match": match, "at": time.time(), "chunks": []}
        with self.state.lock:
            record["headers"] = {name.lower(): value for name, value in self.headers.items()}
            record["concurrent"] = self.state.in_flight[match] = self.state.in_flight.get(match, 0) + 1
            self.state.requests.append(record)
        counted = [True]

        def counted_out() -> None:
            # Before the answer's end is sent: a request the client makes on reading it never overlaps it.
            if counted[0]:
                counted[0] = False
                with self.state.lock:
                    self.state.in_flight[match] = max(0, self.state.in_flight.get(match, 0) - 1)

        try:
            if answer is None:
                counted_out()
                self._send(500, {"error": {"message": "the fake server has no scripted answer for this request"}})
                return
            time.sleep(answer.get("delay_s") or 0)
            streamed = isinstance(body, dict) and body.get("stream")
            content = answer.get("body")
            if streamed and answer.get("status", 200) == 200 and isinstance(content, dict) and content.get("choices"):
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = stream_chunks(content, answer.get("stream") or {}, usage)
                self._stream(chunks, answer, record, counted_out)
            else:
                counted_out()
                self._send(answer.get("status", 200), content, answer.get("headers"))
        finally:
            counted_out()

    def _stream(
        self, chunks: list[dict[str, Any]], answer: dict[str, Any], record: dict[str, Any], ending: Any
    ) -> None:
        options = answer.get("stream") or {}
        cut_after = options.get("cut_after")
        self.send_response(200)
        for name, value in {"Content-Type": "text/event-stream", **(answer.get("headers") or {})}.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for index, chunk in enumerate(chunks):
                if cut_after is not None and index >= cut_after:
                    return  # closed mid-answer: no finish_reason, no [DONE]
                if options.get("error_after") is not None and index >= options["error_after"]:
                    self.wfile.write(b'data: {"error": {"message": "the model is overloaded"}}\n\n')
                    return
                if index and options.get("chunk_delay_s"):
                    time.sleep(options["chunk_delay_s"])
                if any(choice.get("finish_reason") for choice in chunk["choices"]):
                    ending()
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                text = "".join(choice["delta"].get("content") or "" for choice in chunk["choices"])
                with self.state.lock:
                    record["chunks"].append([text, time.time()])
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()


def stream_chunks(body: dict[str, Any], options: dict[str, Any], usage: bool) -> list[dict[str, Any]]:
    """Return the chunks that stream a chat completion, as OpenAI sends them."""
    size = max(1, int(options.get("chunk_chars") or 4))
    message = body["choices"][0]["message"]
    head = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body["model"],
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    content = message.get("content")
    chunks = [chunk({"role": "assistant", "content": "" if content is not None else None})]
    text = content or ""
    chunks += [chunk({"content": text[start : start + size]}) for start in range(0, len(text), size)]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function"}
        chunks.append(chunk({"tool_calls": [{**opening, "function": {"name": function["name"], "arguments": ""}}]}))
        arguments = function["arguments"]
        for start in range(0, len(arguments), size):
            piece = {"index": index, "function": {"arguments": arguments[start : start + size]}}
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, body["choices"][0].get("finish_reason") or "stop"))
    if usage:
        chunks.append({**head, "choices": [], "usage": body.get("usage")})
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed once listening)")
    arguments = parser.parse_args()
    server = ThreadingHTTPServer((arguments.host, arguments.port), _Handler)
    server.daemon_threads = True
    print(f"listening on http://{arguments.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
