"""Connections to MCP servers from the workers' sync code: stdio servers kept per process, HTTP sessions per run.

The `mcp` SDK is asynchronous (anyio) and Celery's pool processes run sync code, so the
clients live in the process's event loop thread (event_loop.py) and sync code waits on it:
- a stdio server runs once per process and server definition: started on first use
  through mcp_guard.py (which stops it when this process dies, a SIGKILL included),
  started again when it has exited, stopped with the worker (Celery's
  worker_process_shutdown and worker_shutdown, atexit otherwise);
- a Streamable HTTP session lives as long as one run of the agent (McpSessions), so
  nothing is held while a subtask waits for a decision. Its headers are read from the
  environment at each connection and appear in no message this module makes.
"""

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from celery.signals import worker_process_shutdown, worker_shutdown
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from execution.agents.event_loop import event_loop
from execution.agents.mcp_servers import McpCallFailed, McpServer, McpUnreachable

logger = logging.getLogger(__name__)

GUARD = str(Path(__file__).with_name("mcp_guard.py"))
MAX_LIST_PAGES = 100
STDERR_LINES_KEPT = 5
STDERR_GRACE_S = 1.0
CLOSE_TIMEOUT_S = 10.0


# --- one held connection ----------------------------------------------------------------


class _Stderr:
    """A stdio server's stderr: logged, its last lines kept for errors; its end means the server has exited."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.lines: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self.ended = threading.Event()
        read, write = os.pipe()
        self.writer = os.fdopen(write, "w")
        threading.Thread(target=self._read, args=(read,), name=f"mcp-stderr-{server}", daemon=True).start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.lines.append(line[:300])
                    logger.info("MCP server %s: %s", self.server, line)
        self.ended.set()

    def last(self) -> str:
        return f" (its last words: {self.lines[-1]})" if self.lines else ""


class _Connection:
    """An MCP client held open by a task of the loop until closed."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self.stderr = _Stderr(server.name) if server.command else None
        self.client: Client | None = None
        self._stop: anyio.Event | None = None
        self._task: Any = None

    @property
    def alive(self) -> bool:
        return self.client is not None and (self.stderr is None or not self.stderr.ended.is_set())

    def start(self) -> "_Connection":
        """Begin connecting (starting a stdio server) without waiting: several servers start at once."""
        self._ready: Future[tuple[Client, anyio.Event]] = Future()
        self._task = event_loop.portal().start_task_soon(self._hold, self._ready)
        return self

    def wait_ready(self) -> None:
        """Wait until connected; raise McpUnreachable when that failed."""
        try:
            wait([self._ready, self._task], return_when=FIRST_COMPLETED)
        except BaseException:
            self._task.cancel()  # interrupted (a soft time limit): stop connecting
            raise
        finally:
            if self.stderr is not None:
                self.stderr.writer.close()  # the server has its own copy; ours would hide its end
        try:
            if not self._ready.done():
                self._task.result()  # the connection's error
                raise RuntimeError("the connection ended before it was made")
            self.client, self._stop = self._ready.result()
        except Exception as error:
            raise McpUnreachable(self._unreachable(error)) from None

    async def _hold(self, ready: Future[tuple[Client, anyio.Event]]) -> None:
        async with self._client() as client:
            stop = anyio.Event()
            ready.set_result((client, stop))
            await stop.wait()

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Client]:
        server = self.server
        async with AsyncExitStack() as stack:
            if self.stderr is not None:
                parameters = StdioServerParameters(
                    command=sys.executable, args=["-I", "-S", GUARD, server.command, *server.args], env=dict(server.env)
                )
                transport: Any = stdio_client(parameters, errlog=self.stderr.writer)
            else:
                # Reads may wait longer than timeout_s: the server may keep an event stream open.
                timeout = httpx2.Timeout(server.timeout_s, read=max(300, server.timeout_s))
                http = httpx2.AsyncClient(headers=server.header_values(), timeout=timeout)
                await stack.enter_async_context(http)
                transport = streamable_http_client(server.url, http_client=http)
            client = Client(transport, cache=None, read_timeout_seconds=server.timeout_s)
            yield await stack.enter_async_context(client)

    def close(self) -> None:
        self.stop()
        self.join()

    def stop(self) -> None:
        """Ask the holder to disconnect (a stdio server is stopped by the SDK: stdin closed, then its group)."""
        stop, self.client = self._stop, None
        if stop is not None:
            with contextlib.suppress(Exception):
                event_loop.portal().call(stop.set)

    def join(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (boundedly) until the connection is closed."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._task.result(timeout)

    def _unreachable(self, error: BaseException) -> str:
        server = self.server
        verb = "could not be started" if server.command else "cannot be reached"
        message = f"The MCP server {server.name!r} ({server.where()}) {verb}: {describe(error)}"
        if self.stderr is not None:
            # A server that failed to start has exited or soon will: its last words come first.
            self.stderr.ended.wait(STDERR_GRACE_S)
            message += self.stderr.last()
        return server.redact(message)

    def list_tools(self) -> list[types.Tool]:
        """Return every tool the server lists, page after page."""
        client = self._client_or_raise()

        async def listing() -> list[types.Tool]:
            tools, cursor = [], None
            with anyio.fail_after(self.server.timeout_s):
                for _ in range(MAX_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
            return tools

        try:
            return event_loop.run(listing)
        except Exception as error:
            self.client = None
            raise McpUnreachable(self._unreachable(error)) from None

    def call_tool(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool; raise McpCallFailed with what to tell the model, McpUnreachable when the server is gone."""
        client, server = self._client_or_raise(), self.server

        async def call() -> types.CallToolResult:
            with anyio.fail_after(server.timeout_s):
                return await client.call_tool(tool, arguments)

        timed_out = McpCallFailed(f"timed out after {server.timeout_s:g}s (timeout_s).")
        try:
            return event_loop.run(call)
        except TimeoutError:
            raise timed_out from None
        except MCPError as error:
            if error.code == types.REQUEST_TIMEOUT:
                raise timed_out from None
            if error.code == types.CONNECTION_CLOSED and self.stderr is not None:
                # Started again for the next call; this one may have had effects, so it is not repeated.
                self.client = None
                stopped = f"the MCP server {server.name} stopped during the call{self.stderr.last()}."
                raise McpCallFailed(stopped) from None
            if error.code == types.CONNECTION_CLOSED:
                raise McpUnreachable(self._unreachable(error)) from None
            raise McpCallFailed(server.redact(error.message)) from None
        except Exception as error:
            raise McpUnreachable(self._unreachable(error)) from None

    def _client_or_raise(self) -> Client:
        if self.client is None:
            raise McpUnreachable(f"The MCP server {self.server.name!r} is not connected.")
        return self.client


def describe(error: BaseException) -> str:
    """Return what went wrong in a few words: the innermost errors of an exception group, deduplicated."""
    if isinstance(error, BaseExceptionGroup):
        parts = dict.fromkeys(describe(inner) for inner in error.exceptions)
        return "; ".join(parts)
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if isinstance(error, OSError | httpx2.HTTPError) else text


# --- per process and per run -------------------------------------------------------------


class _StdioServers:
    """This process's stdio servers: one per definition, started again when it has exited."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Connection] = {}

    def get(self, *servers: McpServer) -> list[_Connection]:
        """Return the servers' connections, starting at once those not running (again, if they have exited)."""
        with self._lock:
            starting: dict[str, _Connection] = {}
            for server in servers:
                key = server.process_key
                connection = self._running.get(key)
                if key in starting or (connection is not None and connection.alive):
                    continue
                if connection is not None:
                    logger.warning("MCP server %s has exited; starting it again", server.name)
                    self._running.pop(key).close()
                starting[key] = _Connection(server).start()
            failed = None
            for key, connection in starting.items():
                try:
                    connection.wait_ready()
                except McpUnreachable as error:
                    failed = failed or error
                else:
                    self._running[key] = connection
            if failed is not None:
                raise failed
            return [self._running[server.process_key] for server in servers]

    def close(self) -> None:
        """Stop every server, all at once."""
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for connection in running:
            connection.stop()
        for connection in running:
            connection.join()

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._running = {}


_stdio = _StdioServers()


class McpSessions:
    """The MCP connections of one run: this process's stdio servers, and HTTP sessions closed with the run."""

    def __init__(self) -> None:
        self._http: dict[str, _Connection] = {}

    def __enter__(self) -> "McpSessions":
        return self

    def __exit__(self, *exc_info: object) -> None:
        http, self._http = list(self._http.values()), {}
        for connection in http:
            connection.close()

    def connect(self, *servers: McpServer) -> list[_Connection]:
        """Return the servers' connections, making those missing all at once; McpUnreachable if one fails."""
        opening = {
            server.name: _Connection(server).start()
            for server in servers
            if server.url and (server.name not in self._http or self._http[server.name].client is None)
        }
        try:
            stdio = iter(_stdio.get(*(server for server in servers if server.command)))
        finally:
            failed = None
            for name, connection in opening.items():
                try:
                    connection.wait_ready()
                except McpUnreachable as error:
                    failed = failed or error
                else:
                    self._http[name] = connection
        if failed is not None:
            raise failed
        return [next(stdio) if server.command else self._http[server.name] for server in servers]

    def list_tools(self, *servers: McpServer) -> list[list[types.Tool]]:
        """Return each server's tools, connecting to them all at once first.

        A stdio server found gone when listed (it exited before the worker noticed) is
        started again once: a listing changes nothing, so asking again is safe.
        """
        listed = []
        for server, connection in zip(servers, self.connect(*servers), strict=True):
            try:
                listed.append(connection.list_tools())
            except McpUnreachable:
                if not server.command:
                    raise
                [connection] = self.connect(server)
                listed.append(connection.list_tools())
        return listed

    def call_tool(self, server: McpServer, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        [connection] = self.connect(server)
        return connection.call_tool(tool, arguments)


def mcp_connections_close() -> None:
    """Stop this process's stdio servers and its event loop."""
    _stdio.close()
    event_loop.close()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _worker_stopping(sender: Any = None, **kwargs: Any) -> None:
    """Stop the servers of a pool process that exits (or of the worker itself, with the solo or threads pool).

    A pool process killed outright never gets here: the guard of each of its servers stops them.
    """
    mcp_connections_close()


def _forget_in_child() -> None:
    _stdio.forget()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(mcp_connections_close)
