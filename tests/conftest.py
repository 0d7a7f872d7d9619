# Shared fixtures live in tests/support/harness.py so tests/unit, tests/host
# and tests/device all get the same ones; importing them here registers them.
from support.harness import (  # noqa: F401
    micropython,
    mosquitto,
    mosquitto_factory,
    mpy_proc,
    paho_client,
)
