# Allocation proofs under micropython.heap_lock(): steady-state QoS 0 publish
# (3.1.1 and 5 with topic aliases), zero-copy receive of QoS 0/1/2 messages,
# and the fixed buffers (one rx, one tx) set at construction.
import pytest

from test_client_helpers import run_mpy, results, mosq, mosquitto_factory  # noqa: F401


@pytest.mark.parametrize("v", [4, 5])
def test_qos0_publish_allocates_nothing(mosq, v):
    out = run_mpy("""
import micropython
from umqtt_full import MQTTClient
c = MQTTClient("hl", "127.0.0.1", %d, version=%d, keepalive=30)
c.connect()
topic = b"hl/topic"
payload = b"x" * 100
c.publish(topic, payload)   # warm-up: v5 assigns the topic alias here
def run(n):
    micropython.heap_lock()
    try:
        for i in range(n):
            c.publish(topic, payload)
    except Exception as e:
        micropython.heap_unlock()
        return e
    micropython.heap_unlock()
print("R err", repr(run(2000)))
c.disconnect()
""" % (mosq.port, v))
    assert results(out)["err"] == "None"


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_zero_copy_receive_allocates_nothing(mosq, v, qos):
    # A second client publishes the messages in batches while the heap is
    # unlocked and the zero-copy subscriber does not touch its socket; the
    # subscriber then handles each batch (and, for QoS 1/2, the PUBACK or
    # PUBREC/PUBREL/PUBCOMP flow, to the last PUBREL) with the heap locked.
    # Deliveries are counted only while it is locked: all N must be.
    # (Batches of 20: mosquitto 2.0.11, with a backlog of QoS 2 messages for a
    # client, sends 20 more per PUBCOMP it receives, past its in-flight limit
    # and past our received-QoS-2 table.)
    out = run_mpy("""
import micropython
from umqtt_full import MQTTClient
N = 300
B = 20
st = [0, 0, 0]     # count, payload byte sum, topic ok
locked = [False, 0, 0]   # heap locked now, deliveries while locked, while not
T = b"zc/topic"
out = bytearray(64)
def cb(m):
    st[0] += 1
    st[1] += m.payload_len
    if m.topic_is(T):
        st[2] += 1
    m.copy_payload(out)
    if locked[0]:
        locked[1] += 1
    else:
        locked[2] += 1
c = MQTTClient("zc", "127.0.0.1", %d, version=%d, keepalive=30)
c.set_callback(cb, zero_copy=True)
c.connect()
c.subscribe(T, %d)
pub = MQTTClient("zcpub", "127.0.0.1", %d, version=%d, keepalive=30)
pub.connect()
s = c._s
err = None
for b in range(N // B):
    for i in range(B):
        pub.publish(T, b"0123456789", qos=%d, wait=False)
    pub.flush()
    micropython.heap_lock()
    locked[0] = True
    try:
        while st[0] < (b + 1) * B or (b == N // B - 1 and s.rx_n):
            c.wait_msg()
    except Exception as e:
        err = e
    locked[0] = False
    micropython.heap_unlock()
    if err:
        break
print("R err", repr(err))
print("R locked", locked[1], locked[2], s.rx_n)
print("R st", st, bytes(out[:10]))
""" % (mosq.port, v, qos, mosq.port, v, qos))
    r = results(out)
    assert r["err"] == "None"
    assert r["locked"] == "300 0 0"
    assert r["st"] == "[300, 3000, 300] b'0123456789'"


def test_buffers_fixed_at_construction(mosq):
    out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("buf", "127.0.0.1", %d, rx_size=512, tx_size=256)
rx, tx = c._rx, c._tx
c.connect()
c.subscribe(b"buf/x", 1)
for i in range(50):
    c.publish(b"buf/x", b"%%d" %% i, qos=1)
    c.check_msg()
print("R same", c._rx is rx, c._tx is tx, len(rx), len(tx))
""" % mosq.port)
    assert results(out)["same"] == "True True 512 256"


@pytest.mark.parametrize("v", [4, 5])
def test_each_packet_is_one_write(mosq, v):
    # A counting wrapper around the socket: one write call per packet sent.
    out = run_mpy("""
from umqtt_full import MQTTClient, props as P
class Count:
    def __init__(self, s):
        self.s = s
        self.n = 0
    def write(self, *a):
        self.n += 1
        return self.s.write(*a)
    def readinto(self, *a):
        return self.s.readinto(*a)
    def close(self):
        self.s.close()
c = MQTTClient("w1", "127.0.0.1", %d, version=%d)
c.connect()
w = c._t.sock = Count(c._t.sock)
c.subscribe(b"w1/x", 2)                      # SUBSCRIBE
c.publish(b"w1/y", b"a" * 300)               # PUBLISH
c.publish(b"w1/y", b"b" * 300, qos=1)        # PUBLISH
c.publish(b"w1/y", b"c" * 300, qos=2)        # PUBLISH, PUBREL
c.publish(b"w1/x", b"d", qos=2)              # PUBLISH, PUBREL (+ PUBREC, PUBCOMP as receiver)
while c.wait_msg(0.5):
    pass
c.ping()                                      # PINGREQ
print("R writes", w.n)
""" % (mosq.port, v))
    assert results(out)["writes"] == "10"
