"""`python -m service`: the gateway on $HOST:$PORT, in WEB_CONCURRENCY processes.

The settings are checked and logging set up here, before anything is served
(service/server.py).
"""

from __future__ import annotations

import ipaddress
import logging
import sys

from service.auth import KeyRing
from service.server import serve
from workers.core.logging_setup import configure_logging
from workers.core.settings import Settings, SettingsError, get_settings

logger = logging.getLogger("service")


def check_exposure(settings: Settings) -> None:
    """Without API keys the API is open: allowed on loopback only, never in production."""
    try:
        keys = KeyRing(settings.api_keys.get_secret_value())
    except ValueError as exc:
        raise SettingsError(f"invalid setting API_KEYS: {exc}") from None
    if keys.enabled:
        return
    if settings.is_production:
        raise SettingsError("invalid setting API_KEYS: required with APP_ENV=production")
    if not _is_loopback(settings.host):
        raise SettingsError(
            f"invalid setting HOST: without API_KEYS the gateway only listens on loopback, "
            f"not {settings.host}"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    try:
        settings = get_settings()
        check_exposure(settings)
    except SettingsError as exc:
        sys.exit(str(exc))
    configure_logging(settings, "web")
    if not KeyRing(settings.api_keys.get_secret_value()).enabled:
        logger.warning("no API_KEYS configured: development mode, listening on loopback only")
    serve(settings)


if __name__ == "__main__":
    main()
