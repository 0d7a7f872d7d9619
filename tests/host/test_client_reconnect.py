# Robust mode (reconnect=True): the reconnect schedule (exponential backoff
# between backoff_min and backoff_max, times a random 0.5..1 jitter, reset by a
# successful connect), measured both from the scheduling itself and from real
# attempts against a stopped mosquitto; and the offline ring's drop-new and
# error policies end to end while the broker is down.
import time

import pytest

from test_client_helpers import (run_mpy, start_mpy, finish, results,
                                 mosquitto_factory, mosq)  # noqa: F401 (fixtures)

VERSIONS = [4, 5]


def _base_ms(k, lo, hi):
    # The un-jittered delay before attempt k+1, in ms: lo * 2^k capped at hi.
    return min(lo * (1 << k), hi) * 1000


SCHEDULE = """
import time
from umqtt_full import MQTTClient
c = MQTTClient("bk", "127.0.0.1", 1, reconnect=True, backoff_min=0.5, backoff_max=8)
def sched(k):
    # The delay (ms) _schedule sets for attempt number k, read from the deadline.
    c._attempt = k
    t0 = time.ticks_ms()
    c._schedule()
    t1 = time.ticks_ms()
    assert c._attempt == k + 1, (k, c._attempt)
    return time.ticks_diff(c._next_try, t0), time.ticks_diff(t1, t0)
seq = []
for k in range(12):
    seq.append(sched(k))
print("R seq", seq)
print("R far", [sched(k) for k in (16, 40, 1000)])
print("R jit", [sched(2)[0] for i in range(400)])
"""


def test_backoff_schedule_grows_caps_and_jitters():
    # _schedule called directly: the deadline it sets for attempt k lies in
    # [0.5, 1) x min(backoff_min * 2^k, backoff_max); at a fixed attempt the
    # jitter spreads over that whole range; two processes (two devices that
    # lost the same broker) get different delays.
    outs = [results(run_mpy(SCHEDULE)) for _ in range(2)]
    for r in outs:
        seq = eval(r["seq"])
        for k, (d, took) in enumerate(seq):
            base = _base_ms(k, 0.5, 8)
            assert base * 0.5 <= d <= base * 1023 / 1024 + took + 1, (k, d, base)
        # Exponential until the cap: the bounds above do not overlap for k = 0..3,
        # so each delay is longer than the one before it.
        ds = [d for d, _ in seq]
        assert ds[0] < ds[1] < ds[2] < ds[3] < ds[4], ds
        assert max(ds) <= 8000
        for d, took in eval(r["far"]):  # 2^16 and beyond: still capped, no overflow
            assert 4000 <= d <= 8000 + took, d
        jit = eval(r["jit"])
        assert all(1000 <= d <= 2000 for d in jit), (min(jit), max(jit))
        assert min(jit) < 1100 and max(jit) > 1900, (min(jit), max(jit))
        bins = [0] * 5  # [1000, 1200), [1200, 1400), ...: ~80 each
        for d in jit:
            bins[min((d - 1000) // 200, 4)] += 1
        assert min(bins) >= 40, bins
        assert len(set(jit)) > 150
    assert outs[0]["jit"] != outs[1]["jit"]
    assert outs[0]["seq"] != outs[1]["seq"]


def test_backoff_against_stopped_broker(mosq):
    # Real attempts: mosquitto is stopped (its port refuses), the client keeps
    # trying with growing, jittered delays and never earlier than scheduled;
    # mosquitto comes back, the client reconnects; stopped again, the first
    # retry is back at backoff_min's range (a connect resets the backoff).
    lo, hi = 0.05, 0.4
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("bks", "127.0.0.1", %d, reconnect=True, backoff_min=%r, backoff_max=%r, timeout=2)
att = []     # ticks of each connection attempt
sch = []     # (ticks when scheduled, delay ms) for each _schedule
_open = c._t.open
def open_(*a):
    att.append(time.ticks_ms())
    return _open(*a)
c._t.open = open_
_sched = c._schedule
def sched():
    t = time.ticks_ms()
    _sched()
    sch.append((t, time.ticks_diff(c._next_try, t)))
c._schedule = sched
c.connect()
print("READY")
def report(n):
    t0 = time.ticks_ms()
    while len(att) < n and time.ticks_diff(time.ticks_ms(), t0) < 15000:
        c.wait_msg(0.2)
    z = sch[0][0]
    print("R att", [time.ticks_diff(t, z) for t in att[1:]])
    print("R sch", [(time.ticks_diff(t, z), d) for t, d in sch])
    att[:] = [att[0]]
    del sch[:]
report(11)                      # the connect + 10 refused attempts
while not c.is_connected():
    c.wait_msg(0.2)
print("R up", c._attempt)
att[:] = [0]
report(3)
""" % (mosq.port, lo, hi))
    try:
        assert p.stdout.readline().strip() == "READY"
        mosq.stop()
        first = [p.stdout.readline(), p.stdout.readline()]
        mosq.start()
        up = p.stdout.readline()
        time.sleep(0.3)
        mosq.stop()
        out = finish(p, 30)
    except BaseException:
        p.kill()
        raise
    r1 = results("".join(first))
    att, sch = eval(r1["att"]), eval(r1["sch"])
    # One wait_msg(0.2) may hold several attempts: at least 10, each failure scheduled.
    assert len(att) >= 10 and len(sch) == len(att) + 1, (att, sch)
    att, sch = att[:10], sch[:11]
    factors = []
    for k, (t, d) in enumerate(sch):
        base = _base_ms(k, lo, hi)
        assert base * 0.5 <= d <= base, (k, d, base)
        factors.append(d / base)
        if k < len(att):
            # Attempt k+1 comes when scheduled: not before, and without a
            # stall (e.g. a whole 1 s poll tick) after.
            late = att[k] - (t + d)
            assert 0 <= late <= 250, (k, late, att, sch)
            assert att[k] >= t  # scheduled after the previous failure
    # Growth seen in the real gaps: the last gaps wait at least 0.5 x backoff_max,
    # the first at most backoff_min.
    gaps = [b - a for a, b in zip([0] + att, att)]
    assert gaps[0] <= lo * 1000 + 250 and min(gaps[-4:]) >= hi * 500, gaps
    assert max(factors) - min(factors) > 0.1, factors  # jittered, not one fixed fraction
    assert results(up)["up"] == "0"
    r2 = results(out)
    sch2 = eval(r2["sch"])
    assert len(sch2) >= 3
    for k, (t, d) in enumerate(sch2[:3]):
        base = _base_ms(k, lo, hi)
        assert base * 0.5 <= d <= base, (k, d, sch2)


POLICY = """
import time
from umqtt_full import MQTTClient, MQTTException
from umqtt_full.ring import %(pol)s
got = []
c = MQTTClient("pol%(v)d", "127.0.0.1", %(port)d, version=%(v)d, reconnect=True,
               backoff_min=0.2, backoff_max=0.5, offline_buffer=200, offline_policy=%(pol)s,
               timeout=2)
c.set_callback(lambda t, m: got.append(m))
c.connect()
c.subscribe(b"pol/#", 1)
print("READY")
while c.check_msg() is not None or c.is_connected():
    time.sleep_ms(50)        # until the broker goes away
res = []
for i in range(20):
    try:
        res.append(c.publish(b"pol/x", b"%%02d" %% i, qos=1))
    except MQTTException as e:
        res.append(e.code)
print("R queued", c.queued(), c._ring.dropped, res, c.is_connected())
t0 = time.ticks_ms()
while len(got) < %(fit)d and time.ticks_diff(time.ticks_ms(), t0) < 15000:
    c.wait_msg(0.2)
c.flush()
c.wait_msg(0.5)              # nothing more may come
print("R left", c.queued(), c.inflight())
print("R got", got)
c.disconnect()
"""


def _policy_run(mosq, v, pol):
    # Each queued QoS 1 PUBLISH of b"pol/x" + 2 bytes is 13 bytes (14 with v5's
    # empty properties) plus the ring's 2-byte length.
    fit = 200 // (15 + (v == 5))
    p = start_mpy(POLICY % dict(pol=pol, v=v, port=mosq.port, fit=fit))
    try:
        assert p.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        mosq.stop()
        queued = results(p.stdout.readline())["queued"]
        time.sleep(0.5)
        mosq.start()
        out = finish(p, 40)
    except BaseException:
        p.kill()
        raise
    return fit, queued, results(out)


@pytest.mark.parametrize("v", VERSIONS)
def test_offline_ring_drop_new_keeps_the_first(mosq, v):
    # DROP_NEW: while mosquitto is stopped the ring keeps the first `fit`
    # messages and silently drops the later ones; after the restart exactly
    # the first ones arrive, in order.
    fit, queued, r = _policy_run(mosq, v, "DROP_NEW")
    assert queued == "%d %d %s False" % (fit, 20 - fit, [None] * 20)
    assert r["left"] == "0 0"
    assert r["got"] == str([b"%02d" % i for i in range(fit)])


@pytest.mark.parametrize("v", VERSIONS)
def test_offline_ring_error_raises_when_full(mosq, v):
    # ERROR: each publish that does not fit raises MQTTException(0x97) to the
    # caller (nothing is dropped behind its back); what did fit arrives after
    # the restart, in order.
    fit, queued, r = _policy_run(mosq, v, "ERROR")
    assert queued == "%d 0 %s False" % (fit, [None] * fit + [0x97] * (20 - fit))
    assert r["left"] == "0 0"
    assert r["got"] == str([b"%02d" % i for i in range(fit)])
