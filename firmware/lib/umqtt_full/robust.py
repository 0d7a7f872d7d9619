# umqtt.robust drop-in: the same client with reconnect on. Like umqtt.robust,
# an operation that meets a dead link reconnects (here with exponential
# backoff and jitter) and carries on; publish waits for the link unless an
# offline_buffer is given, in which case it queues and returns.
from .client import MQTTClient as _Client


class MQTTClient(_Client):
    def __init__(self, *args, **kw):
        if "reconnect" not in kw:
            kw["reconnect"] = True
        super().__init__(*args, **kw)
