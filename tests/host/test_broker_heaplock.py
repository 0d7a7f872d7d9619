# Steady-state routing of a QoS 0 message allocates nothing: the broker and
# three loopback clients run in one MicroPython process (Unix port, 128 KB
# heap); after a warm-up, publish -> poll -> match -> encode into two
# subscribers' tx buffers (a 3.1.1 one and a 5.0 one with a subscription id
# and topic aliases) -> socket write runs under micropython.heap_lock().
import os
import subprocess

from test_broker_helpers import HEAP, MPY, LIB, free_port

SCRIPT = r"""
import socket, micropython, gc
from umqtt_full.broker import Broker
PORT = %(port)d
b = Broker({"max_clients": 3, "max_sessions": 3, "msg_slots": 4, "max_subs": 8,
            "retained": 2, "log_level": "warn"})
b.listen("127.0.0.1", PORT)
addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]

def cli(hello):
    s = socket.socket()
    s.connect(addr)
    s.setblocking(False)
    s.write(hello)
    return s

# CONNECTs by hand: v4 "s4", v5 "s5" (topic alias maximum 2), v5 "p5"
s4 = cli(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02s4")
s5 = cli(b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x03\x22\x00\x02\x00\x02s5")
p5 = cli(b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02p5")
buf = bytearray(1024)

def spin(n=30):
    for i in range(n):
        b.poll(5)

def drain(s):
    n = 0
    while True:
        r = s.readinto(buf)
        if not r:
            return n
        n += r

spin()
print("connacks", drain(s4), drain(s5), drain(p5))
s4.write(b"\x82\x08\x00\x01\x00\x03a/+\x00")
s5.write(b"\x82\x0b\x00\x01\x02\x0b\x07\x00\x03a/#\x00")   # subscription id 7
spin()
print("subacks", drain(s4), drain(s5))
# v5 PUBLISH a/b, QoS 0, a user property and a content type, 64-byte payload
pr = b"\x26\x00\x01k\x00\x01v\x03\x00\x04text"
body = b"\x00\x03a/b" + bytes([len(pr)]) + pr + b"x" * 64
msg = bytes([0x30, len(body)]) + body
got = [0, 0]

def step():
    p5.write(msg)
    a = c = 0
    k = 0
    while (not a or not c) and k < 2000:
        b.poll(0)
        r = s4.readinto(buf)
        if r:
            a += r
        r = s5.readinto(buf)
        if r:
            c += r
        k += 1
    got[0] += a
    got[1] += c

for i in range(50):
    step()
gc.collect()
before = got[:]
micropython.heap_lock()
try:
    for i in range(300):
        step()
finally:
    micropython.heap_unlock()
print("routed", got[0] - before[0], got[1] - before[1], "sent", b.sent)
"""


def test_qos0_routing_allocates_nothing(tmp_path):
    port = free_port()
    path = tmp_path / "heaplock.py"
    path.write_text(SCRIPT % {"port": port})
    env = dict(os.environ, MICROPYPATH=LIB)
    res = subprocess.run([MPY, "-X", "heapsize=" + HEAP, str(path)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = dict(l.split(" ", 1) for l in res.stdout.strip().split("\n"))
    assert lines["subacks"] != "0 0"
    a, c, _, sent = lines["routed"].split()
    # v4: fixed header 2 + topic 2+3 + payload 64 = 71 bytes a message. v5
    # after the first: header 2 + empty topic 2 + properties 1+19 (user
    # property 7, content type 7, subscription id 2, topic alias 3) + 64 = 88.
    assert int(a) == 300 * 71, lines
    assert int(c) == 300 * 88, lines
    assert int(sent) == 700
