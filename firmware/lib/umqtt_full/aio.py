# The asyncio client: the same engine as the blocking client (same buffers,
# session, policies), driven by a reader task that wakes when the socket is
# readable and a keepalive task. publish/subscribe await their acks without
# blocking the event loop. Connecting (bounded by `timeout`) is done inline.
#
#   from umqtt_full.aio import MQTTClient
#   c = MQTTClient("id", "broker", version=5, reconnect=True)
#   c.set_callback(cb)            # cb(topic, msg) as in the blocking client
#   await c.connect()
#   await c.subscribe(b"a/#", 1)
#   await c.publish(b"a/b", b"hi", qos=1)
import asyncio
from asyncio import core as _core
from .client import MQTTClient as _Client
from .errors import MQTTException
from .codec import encode_subscribe, encode_unsubscribe

try:
    from time import ticks_ms, ticks_diff
except ImportError:  # pragma: no cover
    pass


class MQTTClient(_Client):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._tasks = None
        self._ev = asyncio.Event()  # set after each packet the reader handles
        self._up = asyncio.Event()  # set while connected
        self._err = None  # what stopped the reader task

    # ---- connection -------------------------------------------------------

    async def connect(self, clean_session=True, timeout=None):
        sp = _Client.connect(self, clean_session, timeout)
        self._up.set()
        if self._tasks is None:
            self._tasks = (asyncio.create_task(self._reader()),
                           asyncio.create_task(self._pinger()))
        return sp

    async def disconnect(self, reason=0, props=None):
        _Client.disconnect(self, reason, props)
        self._up.clear()
        self._stop()

    def _stop(self):
        if self._tasks:
            for t in self._tasks:
                t.cancel()
        self._tasks = None
        self._kick()

    def _kick(self):
        ev = self._ev
        self._ev = asyncio.Event()
        ev.set()

    async def _progress(self, dl):
        # Wait for the reader to handle a packet, or for the deadline.
        if self._err is not None:
            raise self._err
        ms = ticks_diff(dl, ticks_ms())
        if ms <= 0:
            raise OSError(110)
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            raise OSError(110)

    async def _link(self, e):
        # The link failed under a task: reconnect (robust) or stop.
        self._up.clear()
        if not self.robust or self._user_down:
            self._close()
            self._stop()
            return False
        self._down(e)
        while self.sock is None and not self._user_down:
            await asyncio.sleep_ms(max(0, ticks_diff(self._next_try, ticks_ms())))
            self._revive(False)
        self._up.set()
        return True

    async def _reader(self):
        while True:
            if self.sock is None:
                await self._up.wait()
                continue
            yield _core._io_queue.queue_read(self.sock)
            try:
                while self.sock is not None and self._recv_one():
                    pass
            except (OSError, MQTTException) as e:
                self._kick()
                if not await self._link(e):
                    return
            except Exception as e:
                # The user's callback failed: stop, and let waiting calls raise it.
                self._err = e
                self._close()
                self._up.clear()
                self._stop()
                return
            self._kick()

    def _recv_one(self):
        t = self._recv(0)
        if t:
            self._handle(t)
        return t

    async def _pinger(self):
        while True:
            await asyncio.sleep_ms(self._tick)
            if self.sock is None:
                continue
            try:
                self._keepalive()
            except (OSError, MQTTException) as e:
                self._kick()
                if not await self._link(e):
                    return

    # ---- operations ---------------------------------------------------------

    async def publish(self, topic, msg, retain=False, qos=0, props=None):
        # Returns once the QoS 1/2 flow completes; raises MQTTException(code)
        # when the server refuses the message (v5 reason code).
        dl = ticks_ms() + int(self.timeout * 1000)
        while qos and self._s.count >= self._window():
            await self._progress(dl)
        pid = _Client.publish(self, topic, msg, retain, qos, props, False)
        if not pid:
            return
        dl = ticks_ms() + int(self.timeout * 1000)
        while self._s.find(pid) >= 0:
            if self.sock is None:
                await self._up.wait()
                dl = ticks_ms() + int(self.timeout * 1000)
                continue
            await self._progress(dl)
        if self._done_pid == pid and self._done_rc >= 0x80:
            raise MQTTException(self._done_rc)

    async def subscribe(self, topic, qos=0, no_local=False, retain_as_published=False,
                        retain_handling=0, props=None):
        topic, o = self._prepare_sub(topic, qos, no_local, retain_as_published,
                                     retain_handling, props)
        c = await self._ack(encode_subscribe, [(topic, o)], props)
        if c[0] >= 0x80:
            raise MQTTException(c[0])
        return c[0]

    async def unsubscribe(self, topic, props=None):
        if isinstance(topic, str):
            topic = topic.encode()
        self._subs = [s for s in self._subs if s[0] != topic]
        c = await self._ack(encode_unsubscribe, [topic], props)
        if c and c[0] >= 0x80:
            raise MQTTException(c[0])

    async def _ack(self, enc, topics, props):
        while self._wait_pid:  # one SUBSCRIBE/UNSUBSCRIBE at a time
            await self._progress(ticks_ms() + int(self.timeout * 1000))
        if self.sock is None:
            await self._up.wait()
        pid = self._s.new_pid()
        self._s.reserved = pid
        self._wait_pid = pid
        self._wait_t = 9 if enc is encode_subscribe else 11  # SUBACK / UNSUBACK
        self._codes = None
        try:
            self._send(enc(self._tx, pid, topics, self.version, props))
            dl = ticks_ms() + int(self.timeout * 1000)
            while self._wait_pid == pid:
                await self._progress(dl)
        finally:
            if self._wait_pid == pid:
                self._wait_pid = 0
            self._s.reserved = 0
        return self._codes

    async def flush(self, timeout=None):
        dl = ticks_ms() + int((timeout or self.timeout) * 1000)
        while self._s.count:
            await self._progress(dl)
