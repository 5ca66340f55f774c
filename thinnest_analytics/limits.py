"""Request bodies over MAX_REQUEST_BYTES are refused with 413.

The server process (``thinnest_analytics.server``) enforces the limit while the
body arrives, before anything is stored: Daphne itself buffers a whole body
before the application sees it. ``BodySizeLimit`` is the same rule at the ASGI
level, for servers that stream bodies to the application; Django checks the
limit once more when a view reads the body."""

import json


class BodyTooLarge(Exception):
    pass


def too_large_body(limit: int) -> bytes:
    """The JSON error answered with 413."""
    return json.dumps(
        {
            "error": {
                "code": "request_too_large",
                "message": f"the request body exceeds {limit:,} bytes",
                "details": None,
            }
        }
    ).encode()


def _413(limit: int) -> tuple[dict, dict]:
    body = too_large_body(limit)
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
