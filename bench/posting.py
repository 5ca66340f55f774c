"""Posting request bodies to the server under test from several clients at
once, timed in wall seconds and in the server process's CPU seconds."""

import json
import os
import threading
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: utime, stime, cutime, cstime are fields 14-17 of stat(5).
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _rejected(content_type: str, payload: bytes) -> bool:
    if content_type == "application/json":
        return bool(json.loads(payload)["rejected"])
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    response.ParseFromString(payload)
    return response.partial_success.rejected_spans > 0


def post_all(
    server, key: str, path: str, content_type: str, per_client: list[list[bytes]]
) -> tuple[float, float]:
    """Post every body, one thread per client, each on its own connection;
    (wall seconds, server CPU seconds). Any answer but a 200 that stored
    everything it was sent fails the run."""
    errors: list[str] = []

    def client(mine: list[bytes]) -> None:
        conn = server.connection()
        for body in mine:
            conn.request(
                "POST",
                path,
                body=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
            )
            response = conn.getresponse()
            payload = response.read()
            if response.status != 200 or _rejected(content_type, payload):
                errors.append(f"{response.status} {payload[:300]!r}")

    threads = [threading.Thread(target=client, args=(mine,)) for mine in per_client]
    cpu_before = cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    if errors:
        raise RuntimeError(f"{path} failed: {errors[:3]}")
    return seconds, cpu
