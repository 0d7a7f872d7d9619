# The broker's state in a file: retained messages and persistent sessions
# (subscriptions, queued and in-flight QoS 1/2 messages, inbound QoS 2 ids
# awaiting PUBREL). Imported only when the config sets persist_file.
#
# A cut mid-write leaves the last good state: FILE.tmp is written, flushed
# (os.sync where the port has it), then renamed over FILE. The file ends
# with its length and CRC-32; one that does not check out is refused with a
# log line and the broker starts without it. A leftover .tmp is ignored
# unless FILE is gone (a cut between FAT's remove and rename) and it checks.
#
# What changed is found without hooks in the broker: once a second the state
# is run through the writer into a CRC only; the file is written when that
# differs from the last write and persist_interval s have passed since it
# first did (a burst of changes, one write). persist_interval 0: also before
# each QoS 1/2 ack, PUBCOMP, and the PUBREL of an outgoing QoS 2 message (the
# broker calls sync()).
#
# Format (the tables' own arrays, native byte order: read back on the same
# board, written piece by piece, no copy of the state in RAM):
#   "UMQP" 3, table sizes: msg_slots msg_size max_subs max_topic
#     max_sessions queue_depth max_inflight (u16 each)
#   keep: msg_slots bytes (1: slot saved); each saved slot: tn pn ln (u16)
#     qos (u8) expiry (i32, broker seconds, -1 never), then its bytes
#   retained table (array "h", slot per entry)
#   rows (u16); each: row owner flen foff (u16) opts (u8) subid (u32) filter
#   on: max_sessions bytes (1: session saved); each: n (u16) cid,
#     version (u8) expiry (u32) expire_at (i32) next_pid (u16) q_head q_n
#     f_n r_n (u8), then its in-flight, queue and QoS 2 id arrays
#   broker seconds at the write (u32), length (u32) and CRC-32 (u32) of all
#     the bytes before them.
# Times are restored relative to the broker seconds of the write: time while
# the broker was down is not counted.
import os
import struct
from array import array

try:
    from binascii import crc32
except ImportError:
    def crc32(b, c=0):
        # Ports without binascii.crc32: a simple sum, over bytes (an array
        # iterates items).
        for x in bytes(b):
            c = (c * 31 + x + 1) & 0xFFFFFFFF
        return c

_NEVER = 0xFFFFFFFF
_S = ("f_slot", "f_pid", "f_state", "f_qos", "f_flags", "f_sid", "q_slot", "q_qos", "q_flags",
      "q_sid", "r_pid")


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Persist:
    def __init__(self, b):
        self.b = b
        self.path = b.cfg["persist_file"]
        self.every = b.cfg["persist_interval"]
        self.since = -1
        self.writes = 0
        self.f = None
        self.n = self.crc = 0
        s = b.sess[0]
        self.sig = struct.pack(">4sB7H", b"UMQP", 3, b.pool.n, b.pool.size, b.subs.n, b.subs.w,
                               len(b.sess), s.depth, s.nf)
        self.keep = bytearray(b.pool.n)
        self.on = bytearray(len(b.sess))
        self.fp = None
        self.load()
        if self.fp is None:
            self.fp = self._sum()

    def _sum(self):
        # CRC of what a write would put in the file (times absolute, so an
        # unchanged state sums the same every second).
        self.f = None
        self.n = self.crc = 0
        self._body(self.b, self._w)
        return self.crc

    def tick(self):
        # Each broker second.
        if self._sum() == self.fp:
            self.since = -1
            return
        b = self.b
        if self.since < 0:
            self.since = b.secs
        if b.secs - self.since >= self.every:
            self.save()

    def sync(self):
        # Before a QoS 1/2 ack, a PUBCOMP or an outgoing PUBREL: with
        # persist_interval 0, on file if anything changed.
        if not self.every and self._sum() != self.fp:
            self.save()

    def _w(self, d):
        if self.f:
            self.n += self.f.write(d)  # bytes (len() of an array counts items)
        self.crc = crc32(d, self.crc)

    def save(self):
        b = self.b
        self.since = -1
        tmp = self.path + ".tmp"
        try:
            f = self.f = open(tmp, "wb")
            try:
                self.n = self.crc = 0
                self._body(b, self._w)
                self.fp = self.crc
                self._w(struct.pack(">I", b.secs))
                f.write(struct.pack(">II", self.n, self.crc))
                f.flush()
            finally:
                f.close()
                self.f = None
            if hasattr(os, "sync"):
                os.sync()
            try:
                os.rename(tmp, self.path)
            except OSError:
                os.remove(self.path)  # FAT does not rename over a file
                os.rename(tmp, self.path)
        except OSError as e:
            self.fp = None
            b.log.error("state not saved to %s: %s" % (self.path, e))
            return
        self.writes += 1
        b.log.debug("state saved to %s (%d bytes, write %d)" % (self.path, self.n + 8, self.writes))

    def _body(self, b, w):
        pool = b.pool
        keep = self.keep
        on = self.on
        w(self.sig)
        for i in range(pool.n):
            keep[i] = 0
        for i in b.ret:
            if i >= 0:
                keep[i] = 1
        for s in b.sess:
            on[s.idx] = s.cid is not None and s.persist
            if on[s.idx]:
                for k in range(s.q_n):
                    keep[s.q_slot[(s.q_head + k) % s.depth]] = 1
                for k in range(s.nf):
                    if s.f_state[k]:
                        keep[s.f_slot[k]] = 1
        w(keep)
        for i in range(pool.n):
            if keep[i]:
                w(struct.pack(">HHHBi", pool.tn[i], pool.pn[i], pool.ln[i], pool.qos[i], pool.exp[i]))
                w(memoryview(pool.bufs[i])[:pool.tn[i] + pool.pn[i] + pool.ln[i]])
        w(array("h", b.ret))
        subs = b.subs
        n = 0
        for r in range(subs.top):
            if subs.owner[r] >= 0 and on[subs.owner[r]]:
                n += 1
        w(struct.pack(">H", n))
        for r in range(subs.top):
            o = subs.owner[r]
            if o >= 0 and on[o]:
                fl = subs.flen[r]
                w(struct.pack(">HHHHBI", r, o, fl, subs.foff[r], subs.opts[r], subs.subid[r]))
                w(memoryview(subs.buf)[r * subs.w:r * subs.w + fl])
        w(on)
        for s in b.sess:
            if on[s.idx]:
                c = s.cid.encode()
                w(struct.pack(">H", len(c)))
                w(c)
                w(struct.pack(">BIiH4B", s.version, s.expiry, s.expire_at, s.next_pid, s.q_head,
                              s.q_n, s.f_n, s.r_n))
                for a in _S:
                    w(getattr(s, a))

    # ---- reading -----------------------------------------------------------------

    def _check(self, path):
        # None: no file; False: torn or not ours; True: length and CRC match.
        n = _size(path) - 8
        if n < -8:
            return None
        mv = memoryview(self.b.scratch)
        crc = 0
        with open(path, "rb") as f:
            left = n
            while left > 0:
                m = f.readinto(mv[:min(left, len(mv))])
                if not m:
                    return False
                crc = crc32(mv[:m], crc)
                left -= m
            t = f.read(8)
        return n > 0 and len(t) == 8 and struct.unpack(">II", t) == (n, crc)

    def load(self):
        log = self.b.log
        p = self.path
        tmp = p + ".tmp"
        ok = self._check(p)
        if ok:
            if _size(tmp) >= 0:
                log.warn("%s ignored (a write cut short); state from %s" % (tmp, p))
        else:
            if ok is False:
                log.error("state file %s refused: torn or corrupt (length/CRC mismatch); starting without it" % p)
            t = self._check(tmp)
            if not t:
                if t is False:
                    log.warn("%s ignored (a write cut short)" % tmp)
                return
            log.warn("state from %s (%s missing or bad)" % (tmp, p))
            p = tmp
        with open(p, "rb") as f:
            if f.read(len(self.sig)) != self.sig:
                log.error("state file %s refused: written with other table sizes (msg_slots, msg_size, "
                          "max_subs, max_topic, max_sessions, queue_depth, max_inflight)" % p)
                return
            f.seek(_size(p) - 12)
            was = struct.unpack(">I", f.read(4))[0]
            f.seek(len(self.sig))
            self._read(f, was)
        if p == tmp:
            self.fp = 0  # not in FILE yet: written at the first tick

    def _read(self, f, was):
        b = self.b
        pool = b.pool
        subs = b.subs
        now = b.secs
        rd = f.readinto
        keep = self.keep
        on = self.on
        rd(keep)
        for i in range(pool.n):
            if keep[i]:
                tn, pn, ln, q, e = struct.unpack(">HHHBi", f.read(11))
                pool.tn[i] = tn
                pool.pn[i] = pn
                pool.ln[i] = ln
                pool.qos[i] = q
                pool.exp[i] = -1 if e < 0 else max(e - was, 0) + now
                rd(memoryview(pool.bufs[i])[:tn + pn + ln])
        ret = array("h", b.ret)
        rd(ret)
        for k in range(struct.unpack(">H", f.read(2))[0]):
            r, o, fl, foff, opts, sid = struct.unpack(">HHHHBI", f.read(13))
            rd(memoryview(subs.buf)[r * subs.w:r * subs.w + fl])
            subs.owner[r] = o
            subs.flen[r] = fl
            subs.foff[r] = foff
            subs.opts[r] = opts
            subs.subid[r] = sid
            subs.count += 1
            if r >= subs.top:
                subs.top = r + 1
        rd(on)
        ns = 0
        for s in b.sess:
            if on[s.idx]:
                s.cid = f.read(struct.unpack(">H", f.read(2))[0]).decode()
                (s.version, s.expiry, e, s.next_pid, s.q_head, s.q_n, s.f_n,
                 s.r_n) = struct.unpack(">BIiH4B", f.read(15))
                # Offline: what was left of its expiry; online at the write:
                # its expiry starts now.
                s.expire_at = -1 if s.expiry == _NEVER else (
                    now + s.expiry if e < 0 else max(e - was, 0) + now)
                s.persist = True
                for a in _S:
                    rd(getattr(s, a))
                ns += 1
        # Reference counts recounted from the tables that hold the slots.
        for k in range(len(ret)):
            if ret[k] >= 0:
                b.ret[k] = ret[k]
                b.nret += 1
                pool.hold(ret[k])
        for s in b.sess:
            if on[s.idx]:
                for k in range(s.q_n):
                    pool.hold(s.q_slot[(s.q_head + k) % s.depth])
                for k in range(s.nf):
                    if s.f_state[k]:
                        pool.hold(s.f_slot[k])
        for i in range(pool.n):
            if pool.ref[i]:
                pool.used += 1
        b.log.info("state loaded from %s: %d retained, %d sessions, %d messages stored" % (
            self.path, b.nret, ns, pool.used))
