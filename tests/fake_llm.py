"""A fake LLM on loopback speaking the OpenAI chat-completions and Anthropic messages APIs.

Enough for real clients and their instrumentations: the first turn of a conversation
asks for the first tool the request offers, the turn after a tool result answers in
text. Usage carries cached tokens the way each provider reports them: OpenAI counts
them inside ``prompt_tokens``, Anthropic reports ``input_tokens`` without them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

OPENAI_USAGE: Final = {"prompt_tokens": 60, "completion_tokens": 12, "total_tokens": 72,
                       "prompt_tokens_details": {"cached_tokens": 21}}  # fmt: skip
ANTHROPIC_USAGE: Final = {"input_tokens": 18, "output_tokens": 9, "cache_read_input_tokens": 21,
                          "cache_creation_input_tokens": 0}  # fmt: skip


def _openai(request: dict[str, Any]) -> dict[str, Any]:
    answered = any(m.get("role") == "tool" for m in request.get("messages", []))
    tools = request.get("tools") or []
    message: dict[str, Any]
    if tools and not answered:
        name = tools[0]["function"]["name"]
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": name, "arguments": json.dumps({"order_id": "42"})}}]}  # fmt: skip
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": "Order 42 has shipped."}, "stop"
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1764000000,
        "model": f"{request.get('model', 'gpt-4o-mini')}-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": OPENAI_USAGE,
    }  # fmt: skip


def _anthropic(request: dict[str, Any]) -> dict[str, Any]:
    answered = any(
        isinstance(m.get("content"), list)
        and any(c.get("type") == "tool_result" for c in m["content"])
        for m in request.get("messages", [])
    )
    tools = request.get("tools") or []
    content: list[dict[str, Any]]
    if tools and not answered:
        content = [{"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"],
                    "input": {"order_id": "42"}}]  # fmt: skip
        stop = "tool_use"
    else:
        content, stop = [{"type": "text", "text": "Order 42 has shipped."}], "end_turn"
    return {
        "id": "msg_fake", "type": "message", "role": "assistant",
        "model": request.get("model", "claude-sonnet-4-5"), "content": content,
        "stop_reason": stop, "stop_sequence": None, "usage": ANTHROPIC_USAGE,
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        path = self.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            body = _openai(request)
        elif path.endswith("/messages"):
            body = _anthropic(request)
        else:
            self.send_error(404, f"the fake LLM has no {path}")
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_llm() -> Iterator[str]:
    """Serve on a free loopback port; yields the base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
