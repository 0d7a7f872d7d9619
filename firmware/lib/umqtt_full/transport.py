# Socket and TLS for the client: open with a timeout, read exactly n bytes into
# preallocated views, write a whole packet with one write call. Reads return 0
# when nothing arrived before the socket timeout (the caller decides whether
# that is idle time or a dead link); EOF and socket errors raise OSError.
import socket
import select

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_EAGAIN = const(11)
_ETIMEDOUT = const(110)
_ECONNRESET = const(104)
# lwIP and some ports report timeouts with other numbers.
_TIMEOUTS = (_EAGAIN, _ETIMEDOUT, 116, 35, 60)


def _is_timeout(e):
    return e.args and e.args[0] in _TIMEOUTS


class Transport:
    def __init__(self):
        self.sock = None  # what packets go through (TLS-wrapped when TLS)
        self.raw = None  # the TCP socket, for timeouts
        self.tmo = None  # current socket timeout, to skip redundant setsockopt
        self.poller = None

    def open(self, server, port, ssl, ssl_params, timeout):
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
        except Exception:
            raw.close()
            raise
        self.raw = raw
        self.sock = s
        self.tmo = timeout
        # Waiting happens in poll (which also sees bytes the TLS layer already
        # decrypted); the socket timeout only bounds a packet's remaining bytes.
        self.poller = select.poll()
        self.poller.register(s, select.POLLIN)
        return s

    def wait(self, ms):
        # True when a read would not block (data, EOF or error) within ms
        # milliseconds; no allocation. Reads only start once this says so: a
        # read that times out inside MicroPython's TLS poisons the connection.
        for _ in self.poller.ipoll(ms):
            return True
        return False

    def settimeout(self, t):
        if t is not self.tmo:
            self.raw.settimeout(t)
            self.tmo = t

    def read(self, view, n):
        # Up to n bytes into view (usually all n); 0 when the socket timed out
        # (or, non-blocking, had nothing) before the first byte.
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
        # A partial write (timeout, full send buffer) continues from where it
        # stopped, still without allocating; a dead link raises OSError.
        s = self.sock
        tries = 0
        while done is None or done < n:
            if done is None:
                done = 0
            tries += 1
            if tries > 20:
                raise OSError(_ETIMEDOUT)
            try:
                k = s.write(buf, done, n - done)
            except OSError as e:
                if not _is_timeout(e):
                    raise
                k = 0
            if k:
                done += k

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
