"""The test Redis is a real server: Lua and TIME work, and it can be killed and restarted."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from .redis_server import RedisServer


async def test_lua_and_time_on_the_real_server(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.eval("return redis.call('TIME')[1] + 0", 0) > 1_700_000_000
    finally:
        await client.aclose()


async def test_restart_keeps_the_url(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set("k", "v")
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        redis_server.start()
        assert await client.get("k") is None  # a crash loses what was not saved
    finally:
        await client.aclose()
