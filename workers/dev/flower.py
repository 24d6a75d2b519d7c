"""Start Flower with basic auth from FLOWER_USER / FLOWER_PASSWORD.

Flower reads every FLOWER_* variable as one of its own options and stops on the ones it
does not know (FLOWER_USER, FLOWER_PASSWORD), so they are translated here into its
FLOWER_BASIC_AUTH, which also keeps the password off the command line.
"""

from __future__ import annotations

import os
import sys

from workers.core.settings import Settings, SettingsError, get_settings

DEFAULT_CREDENTIALS = ("admin", "admin")


def check_credentials(settings: Settings) -> None:
    password = settings.flower_password.get_secret_value()
    if not settings.flower_user or not password:
        raise SettingsError("invalid setting FLOWER_PASSWORD: Flower needs a user and a password")
    if settings.is_production and (settings.flower_user, password) == DEFAULT_CREDENTIALS:
        raise SettingsError(
            "invalid setting FLOWER_PASSWORD: the default admin/admin is refused with "
            "APP_ENV=production"
        )


def flower_environment(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in {"FLOWER_USER", "FLOWER_PASSWORD"}}
    password = settings.flower_password.get_secret_value()
    env["FLOWER_BASIC_AUTH"] = f"{settings.flower_user}:{password}"
    env.pop("FLOWER_PORT", None)
    env.pop("FLOWER_ADDRESS", None)
    return env


def main() -> None:
    try:
        settings = get_settings()
        check_credentials(settings)
    except SettingsError as exc:
        sys.exit(str(exc))
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower",
        f"--port={settings.flower_port}", f"--address={settings.flower_address}",
    ]  # fmt: skip
    os.execve(sys.executable, argv, flower_environment(settings, dict(os.environ)))


if __name__ == "__main__":
    main()
