# The asyncio client on MicroPython's asyncio: concurrent publishers and a
# subscriber in one loop, the loop never blocked while waiting, keepalive from
# its own task, and recovery from a cut link with nothing lost for QoS 1/2.
import time

import pytest

from test_client_helpers import (start_mpy, finish, run_mpy, results, paho, mosq,
                                 mosquitto_factory, proxy_factory)  # noqa: F401


@pytest.mark.parametrize("v", [4, 5])
def test_async_concurrent_publishers_and_ticker(mosq, v):
    out = run_mpy("""
import asyncio, time
from umqtt_full.aio import MQTTClient
nxt = [0, 0, 0]   # next value expected per QoS (order kept, nothing missing)
bad = [0]
ticks = [0]
async def ticker():
    while True:
        await asyncio.sleep_ms(10)
        ticks[0] += 1
async def pub(c, q):
    for i in range(50):
        await c.publish(b"aio/q%%d" %% q, b"%%d" %% i, qos=q)
async def main():
    c = MQTTClient("aio%(v)d", "127.0.0.1", %(port)d, version=%(v)d, keepalive=2)
    def cb(t, m):
        q = t[-1] - 48
        if int(m) == nxt[q] or (q == 1 and int(m) == 99 and nxt[1] == 50):
            nxt[q] += 1
        else:
            bad[0] += 1
    c.set_callback(cb)
    await c.connect()
    await c.subscribe(b"aio/#", 2)
    asyncio.create_task(ticker())
    await asyncio.gather(pub(c, 0), pub(c, 1), pub(c, 2))
    t0 = time.ticks_ms()
    n0 = ticks[0]
    await asyncio.sleep(4.5)          # idle past two keepalives: pings keep it up
    print("R ticks", ticks[0] - n0 > 200)
    await c.publish(b"aio/q1", b"99", qos=1)
    await asyncio.sleep_ms(300)
    print("R got", nxt, bad[0])
    print("R up", c.is_connected())
    await c.disconnect()
asyncio.run(main())
""" % dict(v=v, port=mosq.port))
    assert results(out) == {"ticks": "True", "got": "[50, 51, 50] 0", "up": "True"}


@pytest.mark.parametrize("v", [4, 5])
def test_async_reconnect_after_cut_loses_nothing(mosq, proxy_factory, v):
    px = proxy_factory(mosq.port)
    p = start_mpy("""
import asyncio
from umqtt_full.aio import MQTTClient
seen = bytearray(150)
async def main():
    c = MQTTClient("aiorc%(v)d", "127.0.0.1", %(port)d, version=%(v)d, keepalive=3, reconnect=True,
                   backoff_min=0.05, backoff_max=0.3, offline_buffer=4096, %(pers)s)
    def cb(t, m):
        seen[int(m)] = 1
    c.set_callback(cb)
    await c.connect(clean_session=%(clean)s)
    await c.subscribe(b"aiorc/x", 2)
    print("READY")
    for i in range(150):
        await c.publish(b"aiorc/x", b"%%d" %% i, qos=1 + i %% 2)
        await asyncio.sleep_ms(10)
    for k in range(100):
        if all(seen):
            break
        await asyncio.sleep_ms(100)
    print("R missing", [i for i in range(150) if not seen[i]])
    await c.disconnect()
asyncio.run(main())
""" % dict(v=v, port=px.port, pers="session_expiry=60" if v == 5 else "",
           clean="True" if v == 5 else "False"))
    assert p.stdout.readline().strip() == "READY"
    for k in range(3):
        time.sleep(0.5)
        px.cut()
    out = finish(p, 60)
    assert results(out) == {"missing": "[]"}
