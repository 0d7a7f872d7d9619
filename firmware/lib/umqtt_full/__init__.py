# umqtt_full: MQTT 3.1.1/5.0 client and broker for MicroPython.
# Modules load on first use so a board that only runs the client never
# imports the broker (and the other way round).
from .errors import MQTTException

_LAZY = {"MQTTClient": "client", "Broker": "broker"}


def __getattr__(name):
    # MicroPython asks here for submodules too (from umqtt_full import codec).
    mod = _LAZY.get(name, name)
    try:
        m = __import__("umqtt_full." + mod, None, None, (mod,))
    except ImportError:
        raise AttributeError(name)
    return getattr(m, name) if name in _LAZY else m
