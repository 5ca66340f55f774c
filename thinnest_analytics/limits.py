"""An ASGI guard that refuses request bodies over MAX_REQUEST_BYTES before they
are buffered: by Content-Length at once, and while streaming for chunked bodies.
Django checks the same limit when a view reads the body; this keeps a huge
upload from reaching memory or disk first."""

import json


class BodyTooLarge(Exception):
    pass


def _413(limit: int) -> tuple[dict, dict]:
    body = json.dumps(
        {
            "error": {
                "code": "request_too_large",
                "message": f"the request body exceeds {limit:,} bytes",
                "details": None,
            }
        }
    ).encode()
    start = {
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class BodySizeLimit:
    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.limit:
            start, body = _413(self.limit)
            await send(start)
            await send(body)
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                start, body = _413(self.limit)
                await send(start)
                await send(body)
