"""`model_stream`: a streamed model answer's text, from the model server writing a chunk to an SSE client reading it.

The model is the tests' fake server, in a process of its own, which notes when it wrote each
chunk (wall clock, the same machine's). Latency: one subtask of a streamed `openai` agent whose
answer comes in chunks further apart than the coalescing interval, read by an SSE client through
uvicorn; each `agent.message.delta` is matched to the chunk holding its last character, and its
latency is its arrival minus that chunk's writing. Overhead: 50 subtasks of one plan, all
streaming at once (the same answer, chunks sent back to back), against the same plan with
`"stream": false`, from the plan's approval to its completion.
"""

import json
import queue
import statistics
import threading
import time
from pathlib import Path
from uuid import uuid4

import httpx

from benchmarks.bench import Bench, engine_run, scenario_result
from benchmarks.client import Api
from benchmarks.report import Result
from tests.fakes.openai_server import FakeOpenAI, completion, reply

CHUNKS = 40
CHUNK_CHARS = 8
# Above the coalescing interval (0.1 s): every chunk goes out as soon as it arrives.
CHUNK_GAP_S = 0.15
SUBTASKS = 50
ANSWER_CHARS = 2000
STREAMED, PLAIN = "bench_stream", "bench_plain"


def agents_file(folder: Path, model: FakeOpenAI) -> Path:
    path = folder / "agents.json"
    definitions = {
        STREAMED: model.agent_definition(model=STREAMED, timeout_s=60),
        PLAIN: model.agent_definition(model=PLAIN, timeout_s=60, stream=False),
    }
    path.write_text(json.dumps(definitions))
    return path


def delta_latencies(api: Api, model: FakeOpenAI, chunks: int) -> list[float]:
    """Return the milliseconds from each chunk's writing to the arrival of the delta that ends with it."""
    text = "".join(f"{i:0{CHUNK_CHARS - 1}d} " for i in range(chunks))
    marker = f"benchmark model_stream {uuid4().hex[:8]}"
    model.script(reply(completion(text), chunk_chars=CHUNK_CHARS, chunk_delay_s=CHUNK_GAP_S), match=marker)
    subtask = {"key": "answer", "description": marker, "agent": STREAMED, "max_retries": 0}
    plan_id = api.submit({"goal": "benchmark: model_stream", "subtasks": [subtask]})  # a draft: nothing runs yet
    arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
    ready = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Token {api.token}", "Accept": "text/event-stream"}
        with httpx.stream("GET", f"{api.base_url}/api/v1/plans/{plan_id}/events/", headers=headers, timeout=None) as r:
            ready.set()
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "agent.message.delta":
                    arrivals.put((json.loads(line[6:])["delta"], time.time()))
                elif line.startswith("data: ") and event == "subtask.completed":
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)  # the stream has caught up and listens
    api.approve_plan(plan_id)
    thread.join(timeout=chunks * CHUNK_GAP_S + 60)
    written = [(piece, at) for piece, at in model.requests(match=marker)[0]["chunks"] if piece]
    ends, offset = [], 0
    for piece, at in written:
        offset += len(piece)
        ends.append((offset, at))
    latencies, received = [], 0
    while not arrivals.empty():
        delta, arrived = arrivals.get()
        received += len(delta)
        chunk_at = next(at for end, at in ends if end >= received)
        latencies.append((arrived - chunk_at) * 1000)
    if received != len(text):
        raise RuntimeError(f"the SSE client read {received} of {len(text)} characters")
    return latencies


def plan_seconds(api: Api, model: FakeOpenAI, agent: str, count: int) -> float:
    """Return the seconds from approval to completion of a plan of `count` parallel subtasks of `agent`."""
    answer = completion("x" * (ANSWER_CHARS - 1) + ".")
    model.script(*[reply(answer, chunk_chars=16) for _ in range(count)], match=agent)
    subtasks = [{"key": f"s{i}", "description": f"part {i}", "agent": agent, "max_retries": 0} for i in range(count)]
    return engine_run(api, {"goal": "benchmark: model_stream", "max_parallel": 64, "subtasks": subtasks})


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * share) - 1))]


def run(bench: Bench) -> Result:
    chunks = bench.scaled(CHUNKS, 5)
    count = bench.scaled(SUBTASKS, 2)
    result = scenario_result(
        "model_stream",
        f"streamed answers: chunk written -> SSE client ({chunks} chunks), {count} streaming subtasks vs not streamed",
    )
    result.fact("chunks", chunks)
    result.fact("subtasks", count)
    result.fact("answer_chars", ANSWER_CHARS)
    folder = bench.log_dir / "model_stream"
    folder.mkdir(parents=True, exist_ok=True)
    model = FakeOpenAI.start(log=folder / "model.log")
    try:
        env = {"EXECUTION_AGENTS_FILE": str(agents_file(folder, model))}
        with bench.own_stack(result_backend=bench.result_backend, env=env) as (_, api):
            for rep in range(bench.repeat):
                latencies = delta_latencies(api, model, chunks)
                result.add("delta_p50_ms", statistics.median(latencies), "ms")
                result.add("delta_p99_ms", percentile(latencies, 0.99), "ms")
                streamed = plan_seconds(api, model, STREAMED, count)
                plain = plan_seconds(api, model, PLAIN, count)
                result.add("streamed_s", streamed, "s")
                result.add("plain_s", plain, "s")
                result.add("overhead", streamed / plain, "x")
                print(
                    f"  rep {rep + 1}: delta p50 {statistics.median(latencies):.1f} ms, "
                    f"p99 {percentile(latencies, 0.99):.1f} ms; {count} subtasks streamed {streamed:.2f} s, "
                    f"not streamed {plain:.2f} s ({streamed / plain:.2f}x)",
                    flush=True,
                )
    finally:
        model.stop()
    return result
