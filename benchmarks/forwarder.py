"""A TCP forwarder for the `hosts` benchmark: it lets workers in a network namespace reach servers on 127.0.0.1.

It runs in the namespace that holds the servers, listens on the address of a veth pair's end
there and connects, for each connection accepted, to its target from this namespace, so the
servers see an ordinary local client (PostgreSQL's pg_hba of `make test`'s throwaway server
accepts TCP from 127.0.0.1 only). Bytes are passed on as they arrive, with flow control.

    python benchmarks/forwarder.py LISTEN_HOST:PORT=TARGET_HOST:PORT ...

It prints `ready` once it listens on every address and stops on SIGTERM or SIGINT. Started by
path, from any folder: it imports nothing of the project (importing the benchmarks package
would set Django up).
"""

import asyncio
import signal
import sys
from typing import cast

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None  # type: ignore[assignment]


class Side(asyncio.Protocol):
    """One end of a forwarded connection: what it receives is written to the other end."""

    def __init__(self, other: "Side | None" = None) -> None:
        self.other = other
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self.other is not None
        assert self.other.transport is not None
        self.other.transport.write(data)

    # The other end's buffer is full: stop reading here until it drains.
    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()


class Accepted(Side):
    """The client's end: what it sends before the connection to the target is made waits here."""

    def __init__(self, target: tuple[str, int], tasks: set[asyncio.Task]) -> None:
        super().__init__()
        self.target, self.tasks = target, tasks
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self.connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def data_received(self, data: bytes) -> None:
        if self.other is None:
            self.early.append(data)
        else:
            super().data_received(data)

    async def connect(self) -> None:
        assert self.transport is not None
        try:
            _, outbound = await asyncio.get_running_loop().create_connection(lambda: Side(self), *self.target)
        except OSError:
            self.transport.close()
            return
        assert outbound.transport is not None
        if self.transport.is_closing():
            outbound.transport.close()
            return
        self.other = outbound
        for data in self.early:
            outbound.transport.write(data)
        self.early.clear()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(routes: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    servers = [
        await loop.create_server(lambda target=target: Accepted(target, tasks), *listen, reuse_address=True)  # type: ignore[misc]
        for listen, target in routes
    ]
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    print("ready", flush=True)
    await stopped.wait()
    for server in servers:
        server.close()


def main(arguments: list[str]) -> None:
    routes = [(address(listen), address(target)) for listen, _, target in (arg.partition("=") for arg in arguments)]
    if uvloop is not None:
        uvloop.run(serve(routes))
    else:
        asyncio.run(serve(routes))


if __name__ == "__main__":
    main(sys.argv[1:])
