# The short soak in `make test` (the long one is `make soak`): ~60000 messages
# through the broker under a board's 128 KB heap (128wK) while two workers
# connect, publish (QoS 0 batches, a QoS 1 and a QoS 2 flow) and leave in
# turn, 3.1.1 and 5.0, clean and persistent sessions, wills. Heap free after
# gc.collect() is read at quiescent checkpoints (same broker state each
# time): after warm-up, half way and at the end; it must not drift. The
# broker must never log an error, and every client step must get its answer.
from soak.soak import DRIFT, Soak


def test_short_soak_no_heap_drift(tmp_path):
    s = Soak(60000, quiet=True, tmpdir=tmp_path)  # the broker tests' heap: 128wK
    try:
        r = s.run(checkpoints=2, warmup=0.1)
    finally:
        s.close()
    print("short soak: %s" % {k: r[k] for k in ("messages", "connects", "refused_retried", "msg_per_s",
                                               "heap_checkpoints", "delivered_qos0_sub", "dropped",
                                               "broker_warnings", "seconds")})
    assert r["broker_alive"], s.log()[-3000:]
    assert not r["broker_errors"] and not r["client_errors"], (r["broker_errors"], r["client_errors"])
    assert r["messages"] >= 60000 and r["connects"] >= 200, r
    # Every QoS 0 message reached the subscriber or was counted as dropped.
    assert r["delivered_qos0_sub"] + r["dropped"] >= r["messages"], r
    h0 = r["heap_start"]
    for n, h in r["heap_checkpoints"]:
        assert h >= h0 - DRIFT, ("heap free fell from %d to %d by %d messages" % (h0, h, n), r)
