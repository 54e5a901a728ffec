"""A WebSocket subscriber that only counts frames: ``python -m benchmarks.ws_subscriber URL``.

Dials ``URL`` until the server is up (30 s), counts frames until the server closes the connection, then
prints ``{"frames": N}``. It runs in its own process so the feed server is measured, not the reader.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def count(url: str) -> int:
    frames = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            async with connect(url, compression=None, ping_interval=None, max_queue=None) as ws:
                try:
                    async for _ in ws:
                        frames += 1
                except ConnectionClosed:
                    pass
                return frames
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def main() -> None:
    print(json.dumps({"frames": asyncio.run(count(sys.argv[1]))}), flush=True)


if __name__ == "__main__":
    main()
