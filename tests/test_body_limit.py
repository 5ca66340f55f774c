"""The server process refuses a body over MAX_REQUEST_BYTES while it arrives:
413 at once for a declared length, as soon as a chunked stream passes the limit,
and nothing of it kept in temporary files. Raw sockets against a real server
process, as `make run` starts it."""

import json
import os
import select
import socket
import time
from pathlib import Path

import pytest

from .daphne import Daphne
from .processes import app_env

pytestmark = pytest.mark.slow

LIMIT = 1_000_000  # MAX_REQUEST_BYTES of the server under test
SLICE = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("body-limit")
    (root / "tmp").mkdir()
    env = app_env(
        VAR_DIR=str(root),
        TMPDIR=str(root / "tmp"),  # where Twisted keeps bodies it is receiving
        MAX_REQUEST_BYTES=str(LIMIT),
        ALLOW_HTTP="true",
    )
    daphne = Daphne(env)
    try:
        daphne.wait_ready()
        daphne.tmp = root / "tmp"
        yield daphne
    finally:
        daphne.stop()


def temporary_bytes(server) -> int:
    """Bytes in the temporary files the server process holds open."""
    total = 0
    fds = Path(f"/proc/{server.proc.pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith(str(server.tmp)):
                total += os.stat(fd).st_size
        except OSError:
            continue  # closed meanwhile
    return total


def stream(server, head: bytes, piece: bytes, *, limit_after: int) -> tuple[bytes, float, int]:
    """Send ``head``, then ``piece`` after ``piece`` until an answer arrives
    (or 10 s pass); read the answer to its end. Returns the answer, seconds
    from the moment ``limit_after`` bytes were sent to the answer's first byte,
    and the bytes sent."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(head)
        sock.setblocking(False)
        sent, passed_at, answer = 0, None, b""
        deadline = time.monotonic() + 10
        while not answer and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:
                answer = sock.recv(65536)
                if answer:
                    break
            if writable:
                try:
                    sent += sock.send(piece)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break  # the server closed its side; read what it answered
                if passed_at is None and sent >= limit_after:
                    passed_at = time.monotonic()
        answered_at = time.monotonic()
        sock.setblocking(True)
        sock.settimeout(5)
        while True:
            try:
                more = sock.recv(65536)
            except OSError:
                break
            if not more:
                break
            answer += more
        return answer, answered_at - (passed_at or answered_at), sent
    finally:
        sock.close()


def status_and_json(answer: bytes) -> tuple[int, dict]:
    assert answer, "no answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_declared_length_over_the_limit_is_answered_413_at_once(server):
    head = (
        b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000000000000\r\n\r\n"
    )
    answer, seconds, _ = stream(server, head, b"a" * SLICE, limit_after=0)
    status, body = status_and_json(answer)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert seconds < 1
    assert temporary_bytes(server) == 0


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server):
    head = (
        b"POST /api/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (SLICE, b"a" * SLICE)
    answer, seconds, sent = stream(server, head, chunk, limit_after=LIMIT + len(chunk))
    status, body = status_and_json(answer)
    assert status == 413 and "exceeds 1,000,000 bytes" in body["error"]["message"]
    assert seconds < 1
    # The part received before the cut was dropped with its temporary file.
    assert temporary_bytes(server) == 0


def test_a_body_within_the_limit_reaches_the_application(server):
    body = json.dumps({"agent_id": "agent_abc123", "input": "x" * (LIMIT - 100)}).encode()
    assert len(body) < LIMIT
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, reply = status_and_json(answer)
    assert status == 401 and reply["error"]["code"] == "unauthenticated"  # the API's answer, not the guard's
