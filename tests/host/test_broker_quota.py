"""The broker's limits that a publisher or subscriber runs into mid-session,
each answered in the protocol (raw packets, both versions): the message pool
and the retained table full (v5 PUBACK/PUBREC 0x97 quota exceeded, and a
refused QoS 2 id freed at once), a filter over max_topic (SUBACK failure),
more inbound QoS 2 than Receive Maximum (DISCONNECT 0x93), the server
keepalive enforced at 1.5x, and %u ACL patterns that deny other users."""

import time

from test_broker_helpers import (Raw, ack, broker_factory, publish, publish_fields,  # noqa: F401
                                 subscribe)


def _offline_subscriber(b, cid, topic, v=5):
    # A persistent session that subscribed at QoS 1 and left: each message
    # for it holds a pool slot until it comes back.
    r = Raw(b.port)
    r.connect(cid, v, clean=False, **({"cprops": b"\x11\x00\x00\x0e\x10"} if v == 5 else {}))
    r.send(subscribe(1, [(topic, 1)], v=v))
    assert r.read()[0] == 0x90
    r.close()
    time.sleep(0.3)


def test_message_pool_full_answers_quota_exceeded(broker_factory):
    b = broker_factory(msg_slots=2, retained=1, queue_depth=8)
    _offline_subscriber(b, "away", "pool/#")
    p5 = Raw(b.port)
    p5.connect("p5", 5)
    for pid in (1, 2):  # two slots: kept for the offline session
        p5.send(publish("pool/x", b"m%d" % pid, qos=1, pid=pid, v=5))
        assert p5.read() == (0x40, bytes([0, pid])), pid
    p5.send(publish("pool/x", b"m3", qos=1, pid=3, v=5))
    assert p5.read() == (0x40, b"\x00\x03\x97")  # not kept: the publisher hears it
    # QoS 2: an error PUBREC ends the flow, so its packet id must be freed:
    # more of them than the receive maximum (max_inflight 8) without PUBREL
    # would otherwise end in DISCONNECT 0x93.
    for pid in range(10, 22):
        p5.send(publish("pool/x", b"q2", qos=2, pid=pid, v=5))
        assert p5.read() == (0x50, bytes([0, pid, 0x97])), pid
    # 3.1.1 has no reason codes: a plain PUBACK, the drop counted and logged.
    p4 = Raw(b.port)
    p4.connect("p4", 4)
    p4.send(publish("pool/y", b"v4", qos=1, pid=7))
    assert p4.read() == (0x40, b"\x00\x07")
    assert "message pool full" in b.log()
    # The session gets the two that were kept, and nothing else.
    r = Raw(b.port)
    body = r.connect("away", 5, clean=False, cprops=b"\x11\x00\x00\x0e\x10")
    assert body[0] == 1  # session present
    got = []
    for _ in range(2):
        first, body = r.read()
        got.append(publish_fields(body, 1, 5)[3])
        r.send(ack(4, publish_fields(body, 1, 5)[1]))
    assert got == [b"m1", b"m2"]
    assert r.nothing(0.5)
    # Room again: the next one is taken.
    p5.send(publish("pool/x", b"m4", qos=1, pid=4, v=5))
    assert p5.read() == (0x40, b"\x00\x04")


def test_retained_table_full_answers_quota_exceeded(broker_factory):
    b = broker_factory(retained=2, msg_slots=6)
    live = Raw(b.port)
    live.connect("live", 5)
    live.send(subscribe(1, [("r/#", 0)], v=5))
    assert live.read()[0] == 0x90
    p = Raw(b.port)
    p.connect("p", 5)
    for pid, t in ((1, "r/a"), (2, "r/b")):
        p.send(publish(t, b"kept", qos=1, pid=pid, retain=True, v=5))
        assert p.read() == (0x40, bytes([0, pid])), t
    p.send(publish("r/c", b"no room", qos=1, pid=3, retain=True, v=5))
    assert p.read() == (0x40, b"\x00\x03\x97")
    # Still routed to the live subscriber, but not kept for later ones.
    seen = [publish_fields(live.read()[1], 0, 5)[0] for _ in range(3)]
    assert seen == [b"r/a", b"r/b", b"r/c"]
    # Replacing a kept topic needs no new row.
    p.send(publish("r/a", b"new", qos=1, pid=4, retain=True, v=5))
    assert p.read() == (0x40, b"\x00\x04")
    late = Raw(b.port)
    late.connect("late", 4)
    late.send(subscribe(1, [("r/#", 0)]))
    assert late.read()[0] == 0x90
    kept = []
    for _ in range(2):
        f = publish_fields(late.read()[1], 0)
        kept.append((f[0], f[3]))
    assert sorted(kept) == [(b"r/a", b"new"), (b"r/b", b"kept")]
    assert late.nothing(0.4)
    assert "retained table full" in b.log()


def test_filter_over_max_topic_refused_others_granted(broker_factory):
    b = broker_factory(max_topic=16)
    long = "a/" + "x" * 20
    for v, fail in ((4, 0x80), (5, 0x97)):
        r = Raw(b.port)
        r.connect("c%d" % v, v)
        r.send(subscribe(3, [("ok/#", 1), (long, 1), ("fine", 0)], v=v))
        first, body = r.read()
        assert first == 0x90
        codes = body[2:] if v == 4 else body[3:]
        assert list(codes) == [1, fail, 0], (v, body)


def test_more_inbound_qos2_than_receive_maximum_disconnects(broker_factory):
    b = broker_factory(max_inflight=3)
    r = Raw(b.port)
    body = r.connect("many", 5)
    assert b"\x21\x00\x03" in body  # CONNACK Receive Maximum 3
    for pid in (1, 2, 3):
        r.send(publish("q2/x", b"x", qos=2, pid=pid, v=5))
        assert r.read()[0] == 0x50
    r.send(publish("q2/x", b"x", qos=2, pid=4, v=5))  # a 4th before any PUBREL
    first, body = r.read()
    assert first == 0xE0 and body[:1] == b"\x93", body
    assert r.closed(2)
    # PUBREL frees a slot: a client that keeps to the window is fine.
    r = Raw(b.port)
    r.connect("polite", 5)
    for pid in range(1, 8):
        r.send(publish("q2/x", b"x", qos=2, pid=pid, v=5))
        assert r.read() == (0x50, bytes([0, pid, 0x10]))  # no subscribers
        r.send(ack(6, pid))
        assert r.read() == (0x70, bytes([0, pid]))


def test_server_keepalive_is_what_the_broker_enforces(broker_factory):
    b = broker_factory(max_keepalive=1)
    r = Raw(b.port)
    body = r.connect("sleepy", 5, keepalive=60)
    assert b"\x13\x00\x01" in body  # CONNACK Server Keep Alive 1
    t = time.time()
    assert r.closed(6)  # silent: closed at 1.5 x 1 s, not 1.5 x 60 s
    assert 1.2 <= time.time() - t < 4, time.time() - t
    # A client that pings within it stays.
    r = Raw(b.port)
    r.connect("awake", 5, keepalive=60)
    for _ in range(4):
        time.sleep(0.6)
        r.send(b"\xc0\x00")
        assert r.read() == (0xD0, b"")


def test_username_pattern_denies_other_users(broker_factory, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("pattern read users/%u/#\npattern write in/%u/#\n"
                   "user admin\ntopic readwrite users/#\n")
    b = broker_factory(users={"alice": "a", "bob": "b", "admin": "c"}, allow_anonymous=False,
                       acl_file=str(acl))
    al = Raw(b.port)
    al.connect("al", 5, user="alice", password="a")
    al.send(subscribe(1, [("users/alice/#", 0), ("users/bob/#", 0), ("users/#", 0)], v=5))
    assert al.read() == (0x90, b"\x00\x01\x00\x00\x87\x87")
    bo = Raw(b.port)
    bo.connect("bo", 4, user="bob", password="b")
    bo.send(subscribe(1, [("users/bob/#", 0)]))
    assert bo.read() == (0x90, b"\x00\x01\x00")
    ad = Raw(b.port)
    ad.connect("ad", 5, user="admin", password="c")
    ad.send(publish("users/alice/note", b"for alice", qos=1, pid=1, v=5))
    assert ad.read()[0] == 0x40
    ad.send(publish("users/bob/note", b"for bob", qos=1, pid=2, v=5))
    assert ad.read()[0] == 0x40
    f = publish_fields(al.read()[1], 0, 5)
    assert (f[0], f[3]) == (b"users/alice/note", b"for alice")
    f = publish_fields(bo.read()[1], 0)
    assert (f[0], f[3]) == (b"users/bob/note", b"for bob")
    assert al.nothing(0.4) and bo.nothing(0.1)  # neither sees the other's
    # Writing under another user's name is refused.
    al.send(publish("in/bob/x", b"spoof", qos=1, pid=3, v=5))
    assert al.read() == (0x40, b"\x00\x03\x87")
    al.send(publish("in/alice/x", b"mine", qos=1, pid=4, v=5))
    assert al.read() == (0x40, b"\x00\x04\x10")  # allowed; nobody subscribed
