"""`python -m benchmarks.flood URL CLIENTS`: CLIENTS anonymous clients calling URL at once until SIGTERM.

Run in a process of its own, so the flood does not slow the benchmark's own client; on SIGTERM
it prints {"calls", "statuses", "seconds"} as one JSON line.
"""

import asyncio
import json
import signal
import sys
import time
from collections import Counter

import httpx


async def flood(url: str, clients: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    statuses: Counter[str] = Counter()
    began = time.monotonic()

    async def caller(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                statuses[str((await client.get(url)).status_code)] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=30) as client:
        print("flooding", flush=True)
        await asyncio.gather(*(caller(client) for _ in range(clients)))
    seconds = round(time.monotonic() - began, 2)
    print(json.dumps({"calls": sum(statuses.values()), "statuses": dict(statuses), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    asyncio.run(flood(sys.argv[1], int(sys.argv[2])))
