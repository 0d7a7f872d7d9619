# Per-connection and per-session state, allocated once at start: a Conn holds
# one socket's rx/tx buffers and topic-alias tables; a Session holds what
# outlives a connection (in-flight QoS 1/2, the bounded queue, inbound QoS 2
# packet ids, the will) in fixed arrays.
from array import array

FREE = 0
PENDING = 1     # accepted, waiting for CONNECT
ONLINE = 2
ZOMBIE = 3      # closed in the loop; the socket is released after the poll pass
REFUSE = 4      # a connection past max_clients, answered then closed
_NSID = 4       # subscription ids kept per message (broker.py has the same)


class Conn:
    # Enhanced authentication (v5 AUTH): the CONNECT waiting for it, the
    # method, the data for CONNACK, the step. Class defaults: most brokers
    # never set them.
    auth_cn = None
    auth_m = None
    auth_d = None
    auth_n = 0

    def __init__(self, i, size, tam, width):
        self.i = i
        self.sock = None
        self.state = FREE
        self.rx = bytearray(size)
        self.tx = bytearray(size)
        self.rxn = 0
        self.txh = 0
        self.txt = 0
        self.mask = 0
        self.sess = -1
        self.version = 4
        self.ka = 0          # keepalive in ms, 0 = none
        self.last = 0        # ticks of the last packet in
        self.out_max = size  # the client's Maximum Packet Size, capped by tx
        self.tam = tam
        self.ai = bytearray(tam * width)          # inbound alias -> topic
        self.ai_len = array("H", [0] * tam)
        self.ao = bytearray(tam * width)          # outbound alias -> topic
        self.ao_len = array("H", [0] * tam)
        self.ao_n = 0
        self.ao_max = 0
        self.addr = ""
        self.acl = None
        self.stalled = False

    def reset(self):
        self.sock = None
        self.state = FREE
        self.rxn = self.txh = self.txt = 0
        self.mask = 0
        self.sess = -1
        self.version = 4
        self.ka = 0
        self.out_max = len(self.tx)
        for k in range(self.tam):
            self.ai_len[k] = 0
            self.ao_len[k] = 0
        self.ao_n = 0
        self.ao_max = 0
        self.acl = None
        self.stalled = False
        if self.auth_m is not None:
            self.auth_cn = self.auth_m = self.auth_d = None
            self.auth_n = 0


class Session:
    def __init__(self, idx, depth, nflight):
        self.idx = idx
        self.cid = None          # str while the slot is in use
        self.conn = None
        self.version = 4
        self.persist = False
        self.expiry = 0          # s after disconnect; 0xFFFFFFFF never
        self.expire_at = -1      # broker second at which an offline session ends
        self.acl = None          # the owner's ACL rules (None: no ACL), kept while offline
        self.will = None
        self.will_props = None
        self.will_at = -1
        self.will_exp = -1
        self.send_max = nflight  # min(max_inflight, client's Receive Maximum)
        self.next_pid = 0
        self.dropped = 0
        self.last_ack = 0        # ticks of the last PUBACK/PUBREC/PUBCOMP (slow consumer policy)
        self.nf = nflight
        # Outgoing QoS 1/2 (and sends waiting for tx room): state 0 free,
        # 1 PUBLISH sent, 2 PUBREL sent, 5 PUBLISH to send, 6 PUBREL to send.
        self.f_slot = array("h", [-1] * nflight)
        self.f_pid = array("H", [0] * nflight)
        self.f_state = bytearray(nflight)
        self.f_qos = bytearray(nflight)
        self.f_flags = bytearray(nflight)   # bit 0 retain, bit 1 dup
        # Subscription ids, _NSID per entry (0: none) [MQTT-3.3.4-5].
        self.f_sid = array("I", [0] * (nflight * _NSID))
        self.f_n = 0
        # Queue: ring of pool slots with the QoS/flags/sub id to send them with.
        self.depth = depth
        self.q_slot = array("h", [-1] * depth)
        self.q_qos = bytearray(depth)
        self.q_flags = bytearray(depth)
        self.q_sid = array("I", [0] * (depth * _NSID))
        self.q_head = 0
        self.q_n = 0
        # Inbound QoS 2 packet ids between PUBREC and PUBREL.
        self.r_pid = array("H", [0] * nflight)
        self.r_n = 0

    def rx_has(self, pid):
        for k in range(self.r_n):
            if self.r_pid[k] == pid:
                return k
        return -1

    def rx_del(self, pid):
        # An inbound QoS 2 flow ended (PUBREL, or an error PUBREC): free its
        # id. False when it was not there.
        k = self.rx_has(pid)
        if k < 0:
            return False
        self.r_n -= 1
        self.r_pid[k] = self.r_pid[self.r_n]
        return True
