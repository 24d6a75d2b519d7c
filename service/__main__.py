"""`python -m service`: the gateway on $HOST:$PORT."""

from __future__ import annotations

import ipaddress
import logging
import sys

from aiohttp import web

from service.app import create_app
from service.auth import KeyRing
from workers.logging_setup import configure_logging
from workers.settings import Settings, SettingsError, get_settings

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
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda msg: logger.info(msg.strip()),
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
