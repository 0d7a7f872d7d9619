# A broker on a board or the Unix port, configured in code: two users, an ACL,
# stats on $SYS every 10 s. Run: MICROPYPATH=firmware/lib micropython examples/broker_basic.py
from umqtt_full.broker import Broker

# Sized to run under -X heapsize=128K on the Unix port (code compiled from
# source takes ~70 KB there); on a board with .mpy/frozen modules, raise them.
b = Broker({
    "max_clients": 4,
    "max_sessions": 5,
    "msg_slots": 10,
    "max_subs": 24,
    "queue_depth": 4,
    "users": {"sensor": "s3cret", "dash": "d4sh"},
    "allow_anonymous": False,
    "acl": [
        {"user": "sensor", "access": "write", "topic": "sensors/#"},
        {"user": "dash", "access": "read", "topic": "sensors/#"},
        {"pattern": True, "access": "readwrite", "topic": "clients/%c/#"},
    ],
    "sys_interval": 10,
})
b.listen("0.0.0.0", 1883)
b.serve_forever()
