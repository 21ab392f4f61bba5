"""An agent service for the `http` agent kind, on the standard library only: copy it and make it yours.

It speaks the HTTP agent protocol (docs/agents.md): the service POSTs a
subtask's context as JSON; this agent first asks for one tool call that needs a person's
approval (writing a file), then finishes with the result the approver sent back, or fails
when the call was rejected.

    python examples/http_agent.py 8765         # or HTTP_AGENT_PORT=8765; 0 picks a free port
    EXECUTION_AGENTS_FILE=agents.json ...      # {"writer": {"kind": "http", "url": "http://127.0.0.1:8765/"}}
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def next_step(context: dict) -> dict:
    """Return the subtask's next step: a tool call first, then a result (or an error)."""
    calls = context["tool_calls"]  # this subtask's tool calls so far, with their decisions
    if not calls:
        path = context["input"].get("path", f"{context['subtask_key']}.txt")
        content = f"{context['description']}\n"
        call = {"tool": "write_file", "arguments": {"path": path, "content": content}, "requires_approval": True}
        return {"tool_call": call}
    last = calls[-1]
    if last["status"] == "rejected":
        return {"error": f"write_file was rejected: {last['reason'] or 'no reason given'}"}
    return {"result": {"written": last["approved_arguments"]["path"], "tool_result": last["result"]}}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        try:
            context = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, answer = 200, next_step(context)
        except (KeyError, TypeError, ValueError) as error:
            status, answer = 400, {"error": f"not a context: {error!r}"}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HTTP_AGENT_PORT", "8765"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()
