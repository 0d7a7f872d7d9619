# Session state the client keeps across reconnects, in fixed tables: the
# outgoing QoS 1/2 messages in flight (resent with DUP after a reconnect), the
# packet id allocator, and the QoS 2 packet ids received but not yet released
# (so a redelivered QoS 2 PUBLISH is acknowledged but not delivered twice).
from array import array

FREE = 0
WAIT_ACK = 1  # QoS 1 PUBLISH sent, PUBACK due
WAIT_REC = 2  # QoS 2 PUBLISH sent, PUBREC due
WAIT_COMP = 3  # PUBREL sent, PUBCOMP due


class Session:
    def __init__(self, window=8, rx_slots=16):
        self.window = window
        self.pid = array("H", bytes(2 * window))
        self.state = bytearray(window)
        self.flags = bytearray(window)  # qos | retain << 2
        self.seq = [0] * window  # send order, for resending in order
        self.topic = [None] * window  # references to the caller's objects
        self.msg = [None] * window
        self.props = [None] * window
        self.count = 0
        self._next = 0
        self._seq = 0
        # Twice what we advertise as Receive Maximum: seen under load with
        # mosquitto 2.0 (v5, QoS 2), a PUBLISH can arrive before the PUBREL
        # that frees a slot. The v5 refusal (0x93) is kept for a server that
        # really ignores the limit.
        self.rx_max = rx_slots
        self.rx = array("H", bytes(4 * rx_slots))
        self.rx_n = 0
        self.reserved = 0  # a pid in use outside the table (SUBSCRIBE ...)

    # ---- outgoing ----------------------------------------------------------

    def find(self, pid):
        st = self.state
        p = self.pid
        for i in range(self.window):
            if st[i] and p[i] == pid:
                return i
        return -1

    def new_pid(self):
        # The next free packet id, 1..65535; ids of messages still in flight are skipped.
        n = self._next
        while True:
            n = n % 65535 + 1
            if n != self.reserved and self.find(n) < 0:
                self._next = n
                return n

    def add(self, pid, topic, msg, qos, retain, props):
        st = self.state
        for i in range(self.window):
            if not st[i]:
                self.pid[i] = pid
                st[i] = WAIT_ACK if qos == 1 else WAIT_REC
                self.flags[i] = qos | (4 if retain else 0)
                self._seq += 1
                self.seq[i] = self._seq
                self.topic[i] = topic
                self.msg[i] = msg
                self.props[i] = props
                self.count += 1
                return i
        return -1

    def free(self, i):
        if self.state[i]:
            self.state[i] = FREE
            self.topic[i] = None
            self.msg[i] = None
            self.props[i] = None
            self.count -= 1

    def pending(self):
        # Slots in flight, oldest first (allocates; used after a reconnect).
        s = [i for i in range(self.window) if self.state[i]]
        s.sort(key=lambda i: self.seq[i])
        return s

    def clear_out(self):
        for i in range(self.window):
            self.free(i)

    # ---- incoming QoS 2 ------------------------------------------------------

    def rx_has(self, pid):
        r = self.rx
        for i in range(self.rx_n):
            if r[i] == pid:
                return True
        return False

    def rx_add(self, pid):
        if self.rx_n >= len(self.rx):
            return False
        self.rx[self.rx_n] = pid
        self.rx_n += 1
        return True

    def rx_del(self, pid):
        r = self.rx
        n = self.rx_n
        for i in range(n):
            if r[i] == pid:
                r[i] = r[n - 1]
                self.rx_n = n - 1
                return True
        return False

    def clear_rx(self):
        self.rx_n = 0
