# Starts the roles this board is configured for: "broker", "client" or both.
# settings.json is made from boards/<board>/board.json by tools/build_mpy.py.
# Relative paths on purpose: the cwd is the filesystem root on a board and on
# the virtual board alike. Board-specific imports (machine) live here and in
# boot.py, never in the library.
#
# The client role is a small device: it keeps <prefix>/status retained
# ("online", with "offline" as its last will), publishes <prefix>/heap and
# <prefix>/uptime every `interval` seconds, answers <prefix>/cmd/ping on
# <prefix>/pong and switches the LED with <prefix>/cmd/led on|off|toggle.
# Your own code goes in /app.py: `async def start(client, prefix)` runs as a
# task beside it and `def message(topic, msg)` sees every other message.
import gc
import json
import time


def _settings():
    try:
        with open("settings.json") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print("main: no usable settings.json (%s), broker with defaults" % e)
        return {"roles": ["broker"]}


class _Led:
    # Lit = application started; handy on a board without a console.
    def __init__(self, pin):
        self.pin = None
        self.on = False
        if pin is None:
            return
        try:
            from machine import Pin
            self.pin = Pin(pin, Pin.OUT)
        except Exception as e:  # the Unix port has no machine.Pin
            print("main: no LED on %r (%s)" % (pin, e))

    def set(self, on):
        self.on = bool(on)
        if self.pin is not None:
            self.pin.value(1 if on else 0)


def _client_id(s):
    c = s.get("client") or {}
    if c.get("client_id"):
        return c["client_id"]
    try:
        from machine import unique_id
        from binascii import hexlify
        return "%s-%s" % (s.get("board", "board"), hexlify(unique_id()).decode())
    except (ImportError, AttributeError):
        return "%s-%d" % (s.get("board", "board"), time.ticks_ms() & 0xFFFF)


def _broker(s):
    from umqtt_full.broker import Broker
    b = Broker(s.get("broker"))
    b.listen(s.get("broker_host", "0.0.0.0"), s.get("broker_port", 1883))
    print("main: broker on port %d" % s.get("broker_port", 1883))
    return b


async def _serve(b):
    try:
        await b.serve()
    finally:
        b.close()


async def _device(s, led, b):
    # The client role on the asyncio client, reconnecting forever.
    import asyncio
    from umqtt_full.aio import MQTTClient
    c = s.get("client") or {}
    local = b is not None and not c.get("server")
    server = "127.0.0.1" if local else c.get("server")
    if not server:
        print("main: client role needs client.server in settings.json, not started")
        return
    port = s.get("broker_port", 1883) if local else (c.get("port") or 1883)
    cid = _client_id(s)
    prefix = c.get("topic_prefix") or "devices/" + cid
    pb = prefix.encode()
    try:
        app = __import__("app")
    except ImportError:
        app = None
    cl = MQTTClient(cid, server, port, c.get("user"), c.get("password"),
                    keepalive=c.get("keepalive", 60), version=c.get("version", 4),
                    reconnect=True, timeout=c.get("timeout", 5),
                    rx_size=c.get("max_packet", 1024), tx_size=c.get("max_packet", 1024),
                    # Our own broker answers only while it runs: let it run
                    # while connecting blocks this event loop.
                    idle=b.poll if local else None)
    cl.set_last_will(pb + b"/status", b"offline", retain=True, qos=1)
    answers = []  # (topic, payload) to send from the loop, not the callback

    def on_msg(topic, msg):
        if topic == pb + b"/cmd/ping":
            answers.append((pb + b"/pong", msg))
        elif topic == pb + b"/cmd/led":
            led.set(not led.on if msg == b"toggle" else msg in (b"on", b"1"))
            answers.append((pb + b"/led", b"on" if led.on else b"off"))
        elif app is not None and hasattr(app, "message"):
            app.message(topic, msg)

    cl.set_callback(on_msg)
    while True:
        try:
            await cl.connect(clean_session=False)
            break
        except Exception as e:  # broker not up yet: Wi-Fi, boot order
            print("main: client connect to %s:%d failed (%r), retrying" % (server, port, e))
            await asyncio.sleep(2)
    print("main: client %s on %s:%d, topics %s/#" % (cid, server, port, prefix))
    await cl.subscribe(pb + b"/cmd/#", 1)
    await cl.publish(pb + b"/status", b"online", retain=True, qos=1)
    if app is not None and hasattr(app, "start"):
        asyncio.create_task(app.start(cl, prefix))
    t0 = time.ticks_ms()
    every = int(c.get("interval", 30) * 1000)
    due = t0
    try:
        while True:
            while answers:
                await cl.publish(*answers.pop(0), qos=1)
            if time.ticks_diff(time.ticks_ms(), due) >= 0:
                due = time.ticks_add(due, every)
                gc.collect()
                await cl.publish(pb + b"/heap", str(gc.mem_free()).encode())
                await cl.publish(pb + b"/uptime",
                                 str(time.ticks_diff(time.ticks_ms(), t0) // 1000).encode())
            await asyncio.sleep_ms(50)
    finally:
        # A clean stop says so itself; the will covers a crash or power cut.
        try:
            _offline(cl, pb)
        except Exception:
            pass


def _offline(cl, pb):
    # The blocking client's calls (no awaiting in a cancelled task): QoS 0 is
    # enough, TCP delivers it before the DISCONNECT.
    from umqtt_full.client import MQTTClient
    MQTTClient.publish(cl, pb + b"/status", b"offline", True, 0)
    MQTTClient.disconnect(cl)
    cl._stop()


def run(s=None, seconds=None):
    # seconds: stop after that long (tests, demos); None runs until reset.
    s = _settings() if s is None else s
    roles = s.get("roles", ())
    for role in roles:
        if role not in ("broker", "client"):
            print("main: unknown role %r, skipped" % role)
    led = _Led(s.get("led_pin"))
    led.set(1)
    b = _broker(s) if "broker" in roles else None
    if "client" not in roles:
        if b is None:
            return
        if seconds is None:
            try:
                b.serve_forever()  # blocking poll: the idle board sleeps
            finally:
                b.close()
        end = time.ticks_add(time.ticks_ms(), int(seconds * 1000))
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            b.poll(20)
        b.close()
        return
    import asyncio

    async def roles_():
        tasks = [asyncio.create_task(_device(s, led, b))]
        if b is not None:
            tasks.append(asyncio.create_task(_serve(b)))
        if seconds is None:
            await asyncio.gather(*tasks)
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.sleep_ms(50)

    asyncio.run(roles_())


if __name__ == "__main__":
    run()
