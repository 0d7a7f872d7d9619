# MicroPython-side client benchmark (run by bench/run.py on the Unix port).
# usage: micropython client_bench.py simple|full HOST PORT TOPIC N0 N1 N1P NRX NALLOC N2
# Prints "RESULT name value" lines; "READY" when subscribed and waiting for the
# host's flood on TOPIC/rx.
import sys
import gc
import time

which, host, port, topic = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
n0, n1, n1p, nrx, nalloc, n2 = [int(a) for a in sys.argv[5:11]]
if which == "simple":
    from umqtt.simple import MQTTClient
else:
    from umqtt_full import MQTTClient

ticks_us = time.ticks_us
ticks_diff = time.ticks_diff
PAYLOAD = b"x" * 64
TOPIC = topic.encode()
RX_TOPIC = TOPIC + b"/rx"


def result(name, value):
    print("RESULT %s %s" % (name, value))


def sync(c):
    # A PINGREQ/PINGRESP round trip: everything written before it has reached
    # the broker (TCP is in order), so the rate counts messages really sent.
    c.ping()
    if which == "simple":
        # umqtt.simple: wait_msg() returns None for PINGRESP (0xD0).
        while True:
            c.sock.setblocking(True)
            res = c.sock.read(1)
            if res == b"\xd0":
                c.sock.read(1)
                return
            raise OSError("unexpected packet %r" % res)
    else:
        while c.wait_msg(5) != 13:
            pass


c = MQTTClient(b"bench-" + which.encode(), host, port=port, keepalive=60)
c.connect()
sync(c)

# QoS 0 publish rate.
gc.collect()
t = ticks_us()
for i in range(n0):
    c.publish(TOPIC, PAYLOAD)
sync(c)
dt = ticks_diff(ticks_us(), t)
result("qos0", n0 * 1000000 / dt)

# QoS 1 publish rate, blocking (each publish waits for its PUBACK).
gc.collect()
t = ticks_us()
for i in range(n1):
    c.publish(TOPIC, PAYLOAD, qos=1)
dt = ticks_diff(ticks_us(), t)
result("qos1", n1 * 1000000 / dt)

# QoS 1 pipelined (ours only): publish(wait=False) within the in-flight window.
if which != "simple":
    gc.collect()
    t = ticks_us()
    for i in range(n1p):
        c.publish(TOPIC, PAYLOAD, qos=1, wait=False)
    c.flush()
    dt = ticks_diff(ticks_us(), t)
    result("qos1p", n1p * 1000000 / dt)

# QoS 2 publish rate, blocking (PUBLISH, PUBREC, PUBREL, PUBCOMP each time);
# umqtt.simple has no QoS 2 publish.
if which != "simple" and n2:
    gc.collect()
    t = ticks_us()
    for i in range(n2):
        c.publish(TOPIC, PAYLOAD, qos=2)
    dt = ticks_diff(ticks_us(), t)
    result("qos2", n2 * 1000000 / dt)

# Heap bytes allocated per QoS 0 publish.
gc.collect()
gc.disable()
a = gc.mem_alloc()
for i in range(nalloc):
    c.publish(TOPIC, PAYLOAD)
b = gc.mem_alloc()
gc.enable()
sync(c)
result("alloc", (b - a) / nalloc)

# Receive rate: once we print READY the host floods RX_TOPIC while we do not
# read, so the messages wait in mosquitto and the socket; "GO" on stdin once the
# flood is out, then we time reading nrx (the client's speed, not the flood's).
got = [0, 0]


def cb(topic, msg):
    if got[0] == 0:
        got[1] = ticks_us()
    got[0] += 1


c.set_callback(cb)
c.subscribe(RX_TOPIC, 0)
gc.collect()
print("READY")
try:
    sys.stdout.flush()
except AttributeError:
    pass
if sys.stdin.readline().strip() != "GO":
    raise SystemExit("no GO")
while got[0] < nrx:
    c.wait_msg()
dt = ticks_diff(ticks_us(), got[1])
# Rate from the first message to the last (n-1 intervals).
result("recv", (nrx - 1) * 1000000 / dt)
c.disconnect()
print("DONE")
