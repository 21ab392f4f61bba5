"""A streamed chat completion read back into the form of an unstreamed one.

With `stream: true` the model's answer arrives as chunks (`data: {chunk}` lines, then a
chunk with the usage when `stream_options.include_usage` is set, then `data: [DONE]`).
StreamAssembler joins the text deltas, assembles each tool call from its pieces (by
`index`: the id and name come once, the arguments in fragments) and keeps the model and
the usage, then returns the chat completion an unstreamed call would have answered, so
the rest of the agent cannot tell the two apart. Each piece of text is handed on as it
arrives (for the live event stream).

A stream that ends before a choice says why it finished (`finish_reason`) broke off
mid-answer: that is an AgentError (retried), and nothing of it is kept.
"""

import json
from collections.abc import Callable, Iterable
from typing import Any

from execution.agents.base import AgentError


class StreamAssembler:
    """Build one chat completion from the chunks of its stream."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.texts: list[str] = []
        self.saw_text = False
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def add(self, chunk: Any) -> str:
        """Take one chunk; return the text it adds to the answer ("" for none)."""
        if not isinstance(chunk, dict):
            return ""
        self.chunks += 1
        self.id = self.id or str(chunk.get("id") or "")
        self.model = str(chunk.get("model") or self.model)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        added = ""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one answer is asked for: choice 0
            delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
            text = delta.get("content")
            if isinstance(text, str):
                self.saw_text = True
                if text:
                    self.texts.append(text)
                    added += text
            for position, call in enumerate(delta.get("tool_calls") or []):
                if isinstance(call, dict):
                    self._add_call(call, position)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return added

    def _add_call(self, piece: dict[str, Any], position: int) -> None:
        index = piece.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = len(self.calls) if piece.get("id") else max(self.calls, default=position)
        call = self.calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if piece.get("id"):
            call["id"] = str(piece["id"])
        function: dict[str, Any] = piece["function"] if isinstance(piece.get("function"), dict) else {}
        name = function.get("name")
        # The name comes whole in one piece; a server that repeats it must not double it.
        if isinstance(name, str) and name and name != call["function"]["name"]:
            call["function"]["name"] += name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call["function"]["arguments"] += arguments
        elif isinstance(arguments, dict):  # some servers send the arguments whole, as an object
            call["function"]["arguments"] += json.dumps(arguments)

    @property
    def complete(self) -> bool:
        return self.finish_reason is not None

    def completion(self) -> dict[str, Any]:
        """Return the chat completion the stream carried, as an unstreamed call answers it."""
        calls = [self.calls[index] for index in sorted(self.calls)]
        content: str | None = "".join(self.texts) if self.saw_text else None
        if calls and not content:
            content = None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [{**call, "id": call["id"] or None} for call in calls]
        completion: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def completion_from_stream(chunks: Iterable[Any], *, on_text: Callable[[str], None], endpoint: str) -> dict[str, Any]:
    """Read a stream of chunks (dicts) to its end; return the chat completion it carried.

    `on_text` gets each piece of the answer's text as it arrives. Raise AgentError when
    the stream ends before the answer is finished.
    """
    assembler = StreamAssembler()
    for chunk in chunks:
        text = assembler.add(chunk)
        if text:
            on_text(text)
    if not assembler.complete:
        raise AgentError(
            f"{endpoint} ended its stream before the answer was finished ({assembler.chunks} chunks received)."
        )
    return assembler.completion()
