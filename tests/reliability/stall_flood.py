"""A slow-loris client, run as its own process: ``python -m tests.reliability.stall_flood PORT N``.

Opens ``N`` connections to ``127.0.0.1:PORT`` that each send a webhook's headers and 10 bytes
of a 1,000-byte body, then stall. Prints ``open`` once every one has sent its bytes, then one
JSON line: the status each was answered (0: closed unanswered), how many the server closed
within 2 s of its answer, and the seconds until the last was released. Its own process, as
an attacker would be: the sockets and the CPU they cost on this side are not the receiver's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

STALL = (
    b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + b'{"type": "r'
)


async def stalled(port: int, sent: asyncio.Barrier) -> tuple[int, bool]:
    """Send headers and 10 bytes, then wait; return the status answered and whether the
    server then closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(STALL)
        await writer.drain()
        await sent.wait()
        line = await reader.readline()
        try:
            await asyncio.wait_for(reader.read(), 2.0)  # the rest of the answer, then EOF
            closed = True
        except TimeoutError:
            closed = False
        return (int(line.split()[1]) if line else 0), closed
    finally:
        writer.close()


async def flood(port: int, connections: int) -> None:
    began = time.monotonic()
    sent = asyncio.Barrier(connections + 1)
    tasks = [asyncio.create_task(stalled(port, sent)) for _ in range(connections)]
    await sent.wait()
    print("open", flush=True)
    ends = await asyncio.gather(*tasks)
    released = time.monotonic() - began
    statuses = Counter(status for status, _ in ends)
    closed = sum(closed for _, closed in ends)
    print(json.dumps({"statuses": statuses, "closed": closed, "released": released}), flush=True)


if __name__ == "__main__":
    asyncio.run(flood(int(sys.argv[1]), int(sys.argv[2])))
