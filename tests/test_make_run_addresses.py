"""The address block `make run` prints (workers/dev/devstack.py): every address in it is
served by the gateway it names. (tests/test_make_run.py runs the whole stack.)"""

from __future__ import annotations

import re

import aiohttp

from workers.core.settings import load_settings
from workers.dev.devstack import address_block


async def test_the_rest_row_points_to_the_interactive_docs_and_every_address_answers(
    serve_gateway,
) -> None:
    gateway = await serve_gateway()
    port = int(gateway.base_url.rsplit(":", 1)[1])
    block = address_block(load_settings(port=port), private_redis=None)
    [rest] = [line for line in block.splitlines() if line.strip().startswith("REST API")]
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/api/docs" in rest and f"{base}/api/v1/openapi.json" in rest
    [health] = [line for line in block.splitlines() if line.strip().startswith("health")]
    assert f"{base}/healthz" in health and "/health" in health.split("/healthz", 1)[1]
    # Every address but the REST row's pattern (.../api/v1/tasks/...), and the alias.
    served = block.replace(f"{base}/api/v1/tasks/...", "")
    urls = set(re.findall(rf"{re.escape(base)}[\w/.]*", served)) | {f"{base}/health"}
    async with aiohttp.ClientSession() as http:
        for url in sorted(urls):
            async with http.get(url) as resp:
                assert resp.status == 200, url
