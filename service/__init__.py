"""CLAW.AI gateway: REST task API, live task feed and web UI (aiohttp)."""
