"""One REST call against a running kernel's edge, its status checked and its JSON body returned."""

from __future__ import annotations

from typing import Any

import aiohttp

from ml_processing.core.kernel import Kernel


async def call(http: aiohttp.ClientSession, kernel: Kernel, method: str, path: str, body: Any = None,
               status: int = 200, **params: Any) -> Any:
    async with http.request(method, kernel.edge_url + path, json=body, params=params or None) as resp:
        payload = await resp.json()
        assert resp.status == status, payload
        return payload
