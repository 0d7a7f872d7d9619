# The broker as an asyncio task beside another task on the same "board":
# a sensor loop publishes through Broker.publish() while paho subscribes.
import os
import subprocess
import time

from test_broker_helpers import HEAP, MPY, LIB, free_port, Paho

SCRIPT = r"""
import asyncio
from umqtt_full.broker import Broker

async def sensor(b):
    n = 0
    while True:
        await asyncio.sleep_ms(100)
        n += 1
        b.publish("sensor/n", str(n), retain=(n %% 10 == 0))

async def main():
    b = Broker({"max_clients": 3, "max_sessions": 3, "msg_slots": 6, "max_subs": 8, "log_level": "info"})
    b.listen("127.0.0.1", %(port)d)
    asyncio.create_task(sensor(b))
    await b.serve()

asyncio.run(main())
"""


def test_broker_task_beside_a_sensor_task(tmp_path):
    port = free_port()
    path = tmp_path / "aio.py"
    path.write_text(SCRIPT % {"port": port})
    log = open(tmp_path / "aio.log", "wb")
    p = subprocess.Popen([MPY, "-X", "heapsize=" + HEAP, str(path)], stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, MICROPYPATH=".frozen:" + LIB), start_new_session=True)
    try:
        end = time.time() + 10
        while b"listening" not in (tmp_path / "aio.log").read_bytes():
            assert p.poll() is None and time.time() < end, (tmp_path / "aio.log").read_text()
            time.sleep(0.05)
        c = Paho(port, "aio", version=5)
        c.sub("sensor/#", 0)
        msgs = c.wait(5, timeout=5)
        vals = [int(m.payload) for m in msgs]
        assert len(vals) >= 5 and vals == sorted(vals) and len(set(vals)) == len(vals)
        c.stop()
    finally:
        p.kill()
        p.wait(5)
        log.close()
