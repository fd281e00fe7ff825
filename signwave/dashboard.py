"""Flower's options, from signwave's settings (SPEC §8).

Flower reads its options from ``FLOWER_*`` environment variables first, then
from its configuration file (``flowerconfig.py`` in its working directory, or
``--conf``), then from its command-line flags, each overriding the one before.
``celery -A signwave flower`` imports the Celery app before Flower reads any of
them, so the variables set here apply wherever Flower is started from.
"""

from __future__ import annotations

from signwave.settings import Settings

# Localhost only: Flower can revoke tasks and shows every task's arguments.
ADDRESS = "127.0.0.1"


def flower_environment(settings: Settings) -> dict[str, str]:
    """The ``FLOWER_*`` variables for ``settings``: bound to localhost (over any
    ``FLOWER_ADDRESS``), with basic auth when ``SIGNWAVE_FLOWER_BASIC_AUTH`` is
    set (its ``user:password[,user:password]`` is Flower's own format)."""
    env = {"FLOWER_ADDRESS": ADDRESS}
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    return env
