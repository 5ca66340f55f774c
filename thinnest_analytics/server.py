"""The server process: Daphne, with request bodies bounded while they arrive.

Daphne hands a request to the application only once its whole body has been
received, and Twisted stores a body of 100 kB or more (or of unknown length) in
a temporary file meanwhile; a limit checked by the application therefore comes
after an oversized upload has filled memory or disk, and never comes while a
client keeps streaming. Here the HTTP protocol refuses instead: a declared
``Content-Length`` over MAX_REQUEST_BYTES is answered 413 as soon as the headers
are in, and a chunked body is cut off the moment it passes the limit. The
answer is sent at once, the partial body is dropped (its temporary file closed,
which frees it), and whatever else the client sends is read and discarded, not
stored, until it hangs up or LINGER_SECONDS have passed.

Before serving, what start-up built (modules, settings, URL patterns) is moved
out of the garbage collector's sight (``gc.freeze``): it lives as long as the
process, and without this every full collection, which a request allocating
many objects (an OTLP export of a hundred traces) sets off, scans it all again.

Start it exactly as Daphne, whose options it takes::

    python -m thinnest_analytics.server -b 127.0.0.1 -p 8000 thinnest_analytics.asgi:application
"""

import daphne.server  # first: installs the asyncio reactor before Twisted is used  # isort: skip
import gc
from io import BytesIO

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings
from django.urls import get_resolver
from twisted.internet import reactor

from .limits import too_large_body

# How long a refused client may go on sending (discarded) before the connection
# is cut. Closing at once with unread input would make the kernel reset the
# connection, which can destroy the 413 on its way to the client.
LINGER_SECONDS = 2.0


def _refusal(limit: int) -> bytes:
    body = too_large_body(limit)
    head = (
        "HTTP/1.1 413 Content Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedRequest(WebRequest):
    """Daphne's request, refusing a body over the limit while it arrives."""

    refused = False
    received = 0  # body bytes so far

    @staticmethod
    def limit() -> int:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def gotLength(self, length: int | None) -> None:
        # Called once the headers are in: ``length`` is the declared
        # Content-Length, None for a chunked body.
        if length is not None and length > self.limit():
            self.content = BytesIO()
            self.refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.received += len(data)
        if self.received > self.limit():
            self.refuse()
            return
        super().handleContentChunk(data)

    def process(self):
        if self.refused:
            return None  # answered already; the application never sees it
        return super().process()

    def refuse(self) -> None:
        """Answer 413, drop what was stored, discard the rest, then close."""
        self.refused = True
        partial, self.content = self.content, BytesIO()
        partial.close()
        # Twisted answers "Expect: 100-continue" right after this; the client must not be invited.
        self.requestHeaders.removeHeader(b"Expect")
        channel = self.channel
        transport = channel.transport
        channel.persistent = False
        channel.dataReceived = lambda data: None
        transport.write(_refusal(self.limit()))
        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()  # the answer, then end of stream; keep reading to drop
        else:
            transport.loseConnection()
        reactor.callLater(LINGER_SECONDS, transport.abortConnection)


class BoundedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol


class BoundedServer(daphne.server.Server):
    """Daphne's server with BoundedHTTPFactory. ``Server.run`` builds Daphne's
    own factory and assigns it to ``http_factory`` before listening; the
    bounded one takes its place there."""

    def run(self) -> None:
        startup_freeze()
        super().run()

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        self._http_factory = BoundedHTTPFactory(self)


def startup_freeze() -> None:
    """Load the URL patterns (and the views and API they import) now rather than
    at the first request, drop start-up's garbage, and exempt what is left from
    later collections: full collections then scan only what requests made."""
    get_resolver().url_patterns  # noqa: B018 (imports the URLconf)
    gc.collect()
    gc.freeze()


class BoundedCommandLine(CommandLineInterface):
    server_class = BoundedServer


def main() -> None:
    BoundedCommandLine.entrypoint()


if __name__ == "__main__":
    main()
