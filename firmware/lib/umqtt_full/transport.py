# Socket and TLS for the client: open with a timeout, then non-blocking. Waits
# happen in poll; a read takes whatever has arrived (several packets at once)
# into a preallocated view; a packet goes out with one write call. Reads return
# 0 when nothing is there; EOF and socket errors raise OSError.
import socket
import select
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_EAGAIN = const(11)
_ETIMEDOUT = const(110)
_ECONNRESET = const(104)
_POLLIN = const(1)
_POLLOUT = const(4)
# lwIP and some ports report timeouts with other numbers.
_TIMEOUTS = (_EAGAIN, _ETIMEDOUT, 116, 35, 60)


def _is_timeout(e):
    return e.args and e.args[0] in _TIMEOUTS


class Transport:
    def __init__(self):
        self.sock = None  # what packets go through (TLS-wrapped when TLS)
        self.raw = None  # the TCP socket
        self.tmo = None  # s a write may go without progress
        self.poller = None
        self.idle = None  # idle(ms): other work to run while waiting

    def open(self, server, port, ssl, ssl_params, timeout):
        path = None
        if server[:5] == "ws://" or server[:6] == "wss://":
            from .ws import parse  # MQTT over WebSocket (ws.py)
            ssl, server, port, path = parse(server, ssl)
        ai = socket.getaddrinfo(server, port, 0, socket.SOCK_STREAM)[0]
        raw = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        try:
            raw.settimeout(timeout)
            raw.connect(ai[-1])
            s = raw
            if ssl:
                if ssl is True:
                    # umqtt.simple's old form: ssl=True, ssl_params for wrap_socket.
                    import ssl as _ssl
                    p = dict(ssl_params)
                    if "server_hostname" not in p:
                        p["server_hostname"] = server
                    s = _ssl.wrap_socket(raw, **p)
                else:
                    # An SSLContext (or anything with wrap_socket), as in recent umqtt.simple.
                    s = ssl.wrap_socket(raw, server_hostname=server, **ssl_params)
            if path is not None:
                from .ws import WSClient
                s = WSClient(s, server, port, path)
        except Exception:
            raw.close()
            raise
        self.raw = raw
        self.sock = s
        self.tmo = timeout
        # Non-blocking from here: a blocking readinto(buf, n) waits for all n
        # bytes (or the timeout, losing what came), and inside TLS a timed-out
        # read poisons the connection. Waiting happens in poll, which also
        # sees bytes the TLS layer already decrypted.
        try:
            s.setblocking(False)
        except (AttributeError, OSError):
            raw.setblocking(False)
        self.poller = select.poll()
        self.poller.register(s, _POLLIN)
        return s

    def wait(self, ms):
        # True when a read would not block (data, EOF or error) within ms
        # milliseconds; no allocation.
        idle = self.idle
        if idle is None:
            for _ in self.poller.ipoll(ms):
                return True
            return False
        # Waiting on a server that only answers when idle() runs it.
        dl = time.ticks_add(time.ticks_ms(), ms)
        while True:
            for _ in self.poller.ipoll(0):
                return True
            left = time.ticks_diff(dl, time.ticks_ms())
            if left <= 0:
                return False
            idle(left if left < 10 else 10)

    def read(self, view, n):
        # Up to n bytes into view, as many as have arrived; 0 when none have.
        try:
            got = self.sock.readinto(view, n)
        except OSError as e:
            if _is_timeout(e):
                return 0
            raise
        if got is None:
            return 0
        if got == 0:
            raise OSError(_ECONNRESET)  # EOF: the peer closed
        return got

    def write(self, buf, n):
        # One write for the whole packet.
        try:
            done = self.sock.write(buf, n)
        except OSError as e:
            if not _is_timeout(e):
                raise
            done = 0
        if done != n:
            self.finish(buf, done, n)

    def finish(self, buf, done, n):
        # A partial write (full send buffer) continues from where it stopped
        # once poll says there is room, still without allocating; no progress
        # for the timeout means a dead link.
        s = self.sock
        p = self.poller
        dl = time.ticks_add(time.ticks_ms(), int(self.tmo * 1000))
        p.modify(s, _POLLOUT)
        try:
            while done is None or done < n:
                if done is None:
                    done = 0
                for _ in p.ipoll(100):
                    break
                try:
                    k = s.write(buf, done, n - done)
                except OSError as e:
                    if not _is_timeout(e):
                        raise
                    k = 0
                if k:
                    done += k
                    dl = time.ticks_add(time.ticks_ms(), int(self.tmo * 1000))
                elif time.ticks_diff(dl, time.ticks_ms()) <= 0:
                    raise OSError(_ETIMEDOUT)
        finally:
            if self.poller is p:
                p.modify(s, _POLLIN)

    def close(self):
        s = self.sock
        self.sock = None
        self.raw = None
        self.poller = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
