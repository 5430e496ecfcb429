"""The kernel serves its actors over ZeroMQ and REST."""

from __future__ import annotations

import aiohttp

from ml_processing.bus import mdp
from ml_processing.core.kernel import Kernel


async def test_mdp_and_rest_reach_the_same_actor(kernel: Kernel, client: mdp.AsyncClient) -> None:
    assert await client.request("echo", "ping", {"name": "desk"}) == "pong, desk"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kernel.edge_url}/api/v1/echo", json={"x": [1, 2]}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"x": [1, 2]}
