# Measure what each broker limit costs in RAM (gc.mem_free before/after the
# broker builds its tables), on whatever port runs it. Used for the table in
# docs/broker.md:  MICROPYPATH=firmware/lib micropython examples/broker_ram.py
import gc
from umqtt_full.broker import Broker

BASE = {"max_clients": 2, "max_sessions": 2, "max_subs": 8, "msg_slots": 2, "retained": 2,
        "queue_depth": 4, "max_inflight": 4, "topic_alias_max": 2, "pending": 1,
        "max_packet": 512, "max_topic": 64, "log_level": "none"}


def cost(extra):
    cfg = dict(BASE)
    cfg.update(extra)
    gc.collect()
    b = Broker(cfg)
    n = b.tables_bytes
    del b
    gc.collect()
    return n


base = cost({})
print("base tables (2 clients, 2 sessions, 8 subs, 2 slots, 512-byte packets): %d bytes" % base)
for key, step in (("max_clients", 1), ("max_sessions", 1), ("max_subs", 8), ("msg_slots", 1),
                  ("retained", 8), ("queue_depth", 8), ("max_inflight", 8), ("topic_alias_max", 1),
                  ("max_packet", 512), ("max_topic", 64), ("pending", 1)):
    v = BASE[key] + step
    extra = {key: v}
    if key == "max_clients":
        extra["max_sessions"] = v   # sessions are at least clients: measure the connection alone
        base_s = cost({"max_sessions": v})
        print("%-16s +%-4d -> +%d bytes" % (key, step, cost(extra) - base_s))
        continue
    print("%-16s +%-4d -> +%d bytes" % (key, step, cost(extra) - base))
for prof in ({}, {"max_clients": 8, "max_sessions": 12, "msg_slots": 24, "max_subs": 64,
                  "queue_depth": 8, "max_packet": 1024}):
    gc.collect()
    try:
        b = Broker(prof)
        print("profile %r: tables %d bytes, heap free after %d" % (prof, b.tables_bytes, gc.mem_free()))
        del b
    except MemoryError:
        print("profile %r: does not fit this heap" % (prof,))
