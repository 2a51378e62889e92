"""Vendor-shaped streamed answers for `Upstream.stream` (the recipes' tests, docs/ai.md):
what the OpenAI chat completions API and the Anthropic messages API send for
`stream: true`, built from the text pieces the test wants the model to "say".

`gate`, if given, is waited on (`Upstream.gates`) before the last piece: a test
releases it once its client has seen the first one, so the exchange finishes in
time only if every hop passes events on as they come."""

from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator

from rr_addon.testing.upstream import Gates, Received

SSE = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


def _data(doc: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(doc).encode() + b"\n\n"


def openai_chat_stream(pieces: list[str], gates: Gates, gate: Callable[[Received], str | None] = lambda r: r.header("x-test-gate")):
    """An OpenAI `POST /v1/chat/completions` answer: one `chat.completion.chunk` per piece, usage, `[DONE]`."""

    def answer(req: Received):
        body = json.loads(req.body or b"{}")
        model = body.get("model", "gpt-4o-mini")
        name = gate(req)

        def events() -> Iterator[bytes]:
            base = {"id": "chatcmpl-rr", "object": "chat.completion.chunk", "created": 1, "model": model}
            yield _data(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            for i, text in enumerate(pieces):
                if i == len(pieces) - 1 and name:
                    gates.wait(name)
                yield _data(dict(base, choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}]))
            yield _data(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            yield _data(dict(base, choices=[], usage={"prompt_tokens": 9, "completion_tokens": len(pieces), "total_tokens": 9 + len(pieces)}))
            yield b"data: [DONE]\n\n"

        return 200, SSE, events()

    return answer


def anthropic_messages_stream(pieces: list[str], gates: Gates, gate: Callable[[Received], str | None] = lambda r: r.header("x-test-gate")):
    """An Anthropic `POST /v1/messages` answer: message_start, one text delta per piece, message_delta, message_stop."""

    def answer(req: Received):
        body = json.loads(req.body or b"{}")
        model = body.get("model", "claude-3-5-haiku-latest")
        name = gate(req)

        def events() -> Iterable[bytes]:
            usage = {"input_tokens": 9, "output_tokens": 1}
            message = {"id": "msg_rr", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
            yield _data({"type": "message_start", "message": message}, "message_start")
            yield _data({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")
            yield _data({"type": "ping"}, "ping")
            for i, text in enumerate(pieces):
                if i == len(pieces) - 1 and name:
                    gates.wait(name)
                yield _data({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}, "content_block_delta")
            yield _data({"type": "content_block_stop", "index": 0}, "content_block_stop")
            yield _data({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(pieces)}}, "message_delta")
            yield _data({"type": "message_stop"}, "message_stop")

        return 200, SSE, events()

    return answer
