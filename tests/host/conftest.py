# Fixtures used here (micropython, mpy_proc, mosquitto, mosquitto_factory,
# paho_client) are registered in tests/conftest.py from tests/support/harness.py,
# so tests/device can use them as well. Plain helpers (run_mpy, start_mpy,
# free_port, wait_port, ...) are imported from support.harness directly.
