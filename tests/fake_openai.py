"""A small OpenAI-compatible chat completions server on loopback, for the tests
that run real instrumented clients: plain answers, one tool round trip, and a
refusal, each with fixed token counts, streamed or not. Every request body is
kept so tests can compare what was sent with what was stored."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "gpt-4o-mini"
# (prompt, completion) tokens of each kind of answer.
PLAIN_USAGE = (21, 7)
TOOL_CALL_USAGE = (52, 14)
AFTER_TOOL_USAGE = (75, 9)
TOOL_CALL_ID = "call_weather_1"
TOOL_ARGUMENTS = {"city": "Paris"}
AFTER_TOOL_TEXT = "It is sunny in Paris."
FAILING_PROMPT = "please fail"


def plain_answer(prompt: str) -> str:
    return f"Answer to: {prompt}"


class FakeOpenAI:
    """``with FakeOpenAI() as server: server.base_url`` (ends in ``/v1``)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    return self._json(
                        404, {"error": {"message": "not found", "type": "invalid_request_error"}}
                    )
                answer = server.answer(body)
                if answer is None:
                    return self._json(
                        400,
                        {
                            "error": {
                                "message": "The model refused this request.",
                                "type": "invalid_request_error",
                                "code": "refused",
                            }
                        },
                    )
                if body.get("stream"):
                    return self._stream(body, answer)
                return self._json(200, answer)

            def _json(self, status: int, document: dict) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict, answer: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                message = answer["choices"][0]["message"]
                base = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"]}
                base["model"] = answer["model"]
                deltas = [{"role": "assistant", "content": ""}]
                if message.get("content"):
                    words = message["content"].split(" ")
                    deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
                for i, call in enumerate(message.get("tool_calls") or []):
                    deltas.append({"tool_calls": [{"index": i, **call}]})
                for delta in deltas:
                    self._event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                finish = answer["choices"][0]["finish_reason"]
                self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({**base, "choices": [], "usage": answer["usage"]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, document: dict) -> None:
                self.wfile.write(b"data: " + json.dumps(document).encode() + b"\n\n")
                self.wfile.flush()

        return Handler

    def answer(self, body: dict) -> dict | None:
        """The completion for a request, or None to refuse it (HTTP 400)."""
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        prompt = _content_text(last_user.get("content"))
        if FAILING_PROMPT in prompt:
            return None
        if any(m.get("role") == "tool" for m in messages):
            return _completion(
                body, {"role": "assistant", "content": AFTER_TOOL_TEXT}, "stop", AFTER_TOOL_USAGE
            )
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            call = {
                "id": TOOL_CALL_ID,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(TOOL_ARGUMENTS)},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return _completion(body, message, "tool_calls", TOOL_CALL_USAGE)
        return _completion(body, {"role": "assistant", "content": plain_answer(prompt)}, "stop", PLAIN_USAGE)


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _completion(body: dict, message: dict, finish_reason: str, usage: tuple[int, int]) -> dict:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }
