"""`python -m benchmarks.sse_clients`: many Server-Sent Events clients of one URL in one process, one event loop.

Run in a process of its own, so that reading hundreds of streams does not compete with the
benchmark's own Python for its interpreter. The first line on stdin is a JSON object:
{"url": ..., "tokens": [one API token per client], "connecting": how many handshakes at once}.
The clients connect (at most `connecting` of them waiting for their first bytes at a time, as
clients arriving over a moment do), then one JSON line {"ready": N, "refused": {status: count}}
is written. From then on, each time an event's `id:` has reached every client, one line
{"seq", "first", "median", "last"} says when (time.monotonic(), the same clock in every process
on Linux, so the benchmark compares it with its commit times). End of input closes the streams.

The streams are read as raw HTTP/1.1 (the chunked body's framing stays in the text: each SSE
message is one chunk, so an `id:` line is never split by it): an HTTP library's own cost per
message would compete for the machine's cores with the web processes being measured.
"""

import asyncio
import json
import re
import statistics
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


class Fanout:
    """The arrivals of every event at every client."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.arrivals: dict[int, list[float]] = {}

    def arrived(self, seq: int, at: float) -> None:
        times = self.arrivals.setdefault(seq, [])
        times.append(at)
        if len(times) == self.clients:
            del self.arrivals[seq]
            line = {"seq": seq, "first": min(times), "median": statistics.median(times), "last": max(times)}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()


async def stream(url: str, token: str, fanout: Fanout, connecting: asyncio.Semaphore, statuses: Counter) -> None:
    """Open one stream and note the time each event's id arrives, until cancelled."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Token {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    async with connecting:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        if status != "200":
            statuses[status] += 1
            writer.close()
            return
        buffer = await reader.read(65536)  # the stream's first message (retry:): it has subscribed
        statuses[status] += 1
    try:
        while True:
            # Only whole messages (ending in a blank line) are searched; the rest waits for more.
            end = buffer.rfind(b"\n\n")
            if end >= 0:
                for match in ID.finditer(buffer, 0, end + 2):
                    fanout.arrived(int(match.group(1)), time.monotonic())
                buffer = buffer[end + 2 :]
            data = await reader.read(65536)
            if not data:
                return
            buffer += data
    finally:
        writer.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    config = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    tokens: list[str] = config["tokens"]
    fanout = Fanout(len(tokens))
    statuses: Counter = Counter()
    connecting = asyncio.Semaphore(config.get("connecting", 25))
    streams = [asyncio.create_task(stream(config["url"], token, fanout, connecting, statuses)) for token in tokens]
    while sum(statuses.values()) < len(tokens):
        failed = [task for task in streams if task.done() and task.exception() is not None]
        if failed:
            raise RuntimeError(f"a client failed: {failed[0].exception()!r}")
        await asyncio.sleep(0.01)
    refused = {status: count for status, count in statuses.items() if status != "200"}
    fanout.clients = statuses["200"]
    sys.stdout.write(json.dumps({"ready": statuses["200"], "refused": refused}) + "\n")
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our input
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
