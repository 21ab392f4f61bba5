"""`mcp`: an MCP call made by a worker's openai agent, against the same call made with the mcp client directly.

Two servers no one here wrote: `mcp-server-time` over stdio (`get_current_time`) and the
npm "everything" server over Streamable HTTP (`echo`). Directly: one `mcp.Client` session
in this process, `call_tool` timed call by call. Sync: the same calls made as the worker's
agent makes them (McpSessions, sync code waiting on the event loop thread), in this
process. Through the worker: one subtask of an
`openai` agent on a stack of its own, whose scripted model (the tests' fake server) asks
for one call of the tool per answer; the time between two consecutive model requests is
the model's answer, the agent's bookkeeping and the call. Its answers alternate with calls
of a tool that does not exist (answered at once, nothing called): the p50 of the
differences between each pair of steps is the call's cost through the worker.
"""

import itertools
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api, wait_finished
from benchmarks.report import Result
from execution.agents.mcp_connections import McpSessions
from execution.agents.mcp_servers import McpServer
from scripts.servers import free_port
from tests.fakes.openai_server import FakeOpenAI, completion, tool_call
from tests.mcp.servers import EverythingServer, npm_servers_installed

CALLS = 100
AGENT = "bench_mcp"
TIME_SERVER: dict[str, Any] = {"command": sys.executable, "args": ["-m", "mcp_server_time"]}
CALLS_OF = {
    "stdio": ("time__get_current_time", "get_current_time", {"timezone": "Europe/Paris"}),
    "http": ("everything__echo", "echo", {"message": "benchmark"}),
}
NO_TOOL = "none__missing"


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def direct(server: Any, tool: str, arguments: dict[str, Any], count: int) -> list[float]:
    """Return the seconds of `count` calls made one after another in one session of the mcp client."""

    async def calls() -> list[float]:
        async with Client(server, cache=None) as client:
            await client.list_tools()
            samples = []
            for _ in range(count):
                began = time.perf_counter()
                await client.call_tool(tool, arguments)
                samples.append(time.perf_counter() - began)
            return samples

    return anyio.run(calls)


def bridged(server: McpServer, tool: str, arguments: dict[str, Any], count: int) -> list[float]:
    """Return the seconds of `count` calls made as the worker's agent makes them, from sync code, in this process."""
    with McpSessions() as sessions:
        sessions.list_tools(server)
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            sessions.call_tool(server, tool, arguments)
            samples.append(time.perf_counter() - began)
    return samples


def through_worker(api: Api, model: FakeOpenAI, transport: str, count: int) -> tuple[list[float], list[float]]:
    """Return the seconds between a model request and the next, after an answer calling the tool and after one not.

    The subtask's model answers alternate: one call of the MCP tool, then one of a tool that
    does not exist (answered at once), `count` times; so each pair of steps has the same
    conversation length, load and bookkeeping, and differs by the call alone.
    """
    marker = f"benchmark mcp {transport} {uuid4().hex[:8]}"
    function, _, arguments = CALLS_OF[transport]
    calling = completion(tool_calls=[tool_call(function, arguments)])
    missing = completion(tool_calls=[tool_call(NO_TOOL, {})])
    model.script(*[calling, missing] * count, completion("done"), match=marker)
    subtask = {"key": "calls", "description": marker, "agent": AGENT, "timeout_s": 600, "max_retries": 0}
    plan_id = api.submit({"goal": "benchmark: mcp", "requires_approval": False, "subtasks": [subtask]})
    wait_finished([plan_id], timeout=600)
    arrivals = [request["at"] for request in model.requests(match=marker)]
    if len(arrivals) != 2 * count + 1:
        raise RuntimeError(f"the {transport} subtask made {len(arrivals)} of {2 * count + 1} model calls")
    steps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    return steps[0::2], steps[1::2]


def agents_file(folder: Path, model: FakeOpenAI, http_url: str, count: int) -> Path:
    servers = [
        {"name": "time", **TIME_SERVER, "requires_approval": False},
        {"name": "everything", "url": http_url, "tools": ["echo"], "requires_approval": False},
    ]
    definition = model.agent_definition(max_steps=2 * count + 2, timeout_s=30, mcp_servers=servers)
    path = folder / "agents.json"
    path.write_text(json.dumps({AGENT: definition}))
    return path


def run(bench: Bench) -> Result:
    # The clients' one line per HTTP request and per reconnection of the idle GET stream.
    for name in ("httpx2", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    count = bench.scaled(CALLS, 10)
    result = scenario_result("mcp", f"{count} MCP calls in a row, stdio (mcp-server-time) and HTTP (server-everything)")
    result.fact("calls", count)
    npm_servers_installed()
    folder = bench.log_dir / "mcp"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    model = FakeOpenAI.start(log=folder / "model.log")
    try:
        with EverythingServer.running(port, folder / "everything.log"):
            env = {"EXECUTION_AGENTS_FILE": str(agents_file(folder, model, url, count))}
            with bench.own_stack(result_backend=bench.result_backend, env=env) as (_, api):
                for rep in range(bench.repeat):
                    measure(result, api, model, url, count, rep)
    finally:
        model.stop()
    return result


def measure(result: Result, api: Api, model: FakeOpenAI, url: str, count: int, rep: int) -> None:
    servers = {"stdio": StdioServerParameters(**TIME_SERVER), "http": url}
    definitions = {
        "stdio": McpServer(name="time", command=sys.executable, args=tuple(TIME_SERVER["args"])),
        "http": McpServer(name="everything", url=url),
    }
    figures = []
    for transport in ("stdio", "http"):
        _, tool, arguments = CALLS_OF[transport]
        directly = p50_ms(direct(servers[transport], tool, arguments, count))
        result.add(f"sync_{transport}_p50_ms", p50_ms(bridged(definitions[transport], tool, arguments, count)), "ms")
        calling, not_calling = through_worker(api, model, transport, count)
        worker = p50_ms([call - none for call, none in zip(calling, not_calling, strict=True)])
        result.add(f"direct_{transport}_p50_ms", directly, "ms")
        result.add(f"worker_{transport}_p50_ms", worker, "ms")
        result.add(f"{transport}_ratio", worker / directly, "x")
        result.add(f"worker_{transport}_step_p50_ms", p50_ms(calling), "ms")
        result.add(f"worker_{transport}_no_call_step_p50_ms", p50_ms(not_calling), "ms")
        figures.append(f"{transport} {directly:.2f} ms direct, {worker:.2f} ms through the worker")
    print(f"  rep {rep + 1}: {'; '.join(figures)}", flush=True)
