"""Flower's options for `celery -A signwave flower` (SPEC §8).

Flower reads this file from its working directory (the `Procfile` names it
with ``--conf``). Its options override ``FLOWER_*`` variables; command-line
flags override both. Only names of Flower options may be defined here without
a leading underscore: tornado applies every such name.
"""

from signwave.runtime import settings as _settings

# Localhost only: Flower can revoke tasks and shows every task's arguments.
address = "127.0.0.1"

_auth = _settings().flower_basic_auth
if _auth:
    basic_auth = _auth.split(",")
