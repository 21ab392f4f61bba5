"""`python -m benchmarks.flood URL CALLS`: a burst of CALLS anonymous GETs of URL at once per input line.

Run in a process of its own, so the burst does not slow the benchmark's own client: each line
read on stdin sends CALLS requests at once, one on each of CALLS open connections, and once all
are answered writes one JSON line {"ms", "statuses"}; end of input ends it. The requests are
written and read as raw HTTP/1.1 over keep-alive connections: an HTTP library's own cost per
call would compete for the machine's cores with the service being measured.
"""

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> str:
    """Send one GET on a kept-alive connection; return its status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    await reader.readexactly(length)
    return status


async def bursts(url: str, calls: int) -> None:
    parts = urlsplit(url)
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    connections = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(calls)]
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while await loop.run_in_executor(None, sys.stdin.readline):
        began = time.perf_counter()
        answers = await asyncio.gather(*(call(reader, writer, request) for reader, writer in connections))
        ms = round((time.perf_counter() - began) * 1000, 2)
        print(json.dumps({"ms": ms, "statuses": dict(Counter(answers))}), flush=True)
    for _, writer in connections:
        writer.close()


if __name__ == "__main__":
    asyncio.run(bursts(sys.argv[1], int(sys.argv[2])))
