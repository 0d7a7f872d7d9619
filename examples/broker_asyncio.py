# The broker as one asyncio task beside another: a "sensor" task publishes a
# reading every second through the broker itself, retained, so every new
# subscriber gets the latest at once.
# Run: MICROPYPATH=.frozen:firmware/lib micropython examples/broker_asyncio.py
import asyncio
import time
from umqtt_full.broker import Broker


async def sensor(b):
    while True:
        b.publish("board/uptime", str(time.ticks_ms() // 1000), retain=True)
        await asyncio.sleep(1)


async def main():
    # small enough for a 128 KB heap next to asyncio on the Unix port
    b = Broker({"max_clients": 3, "max_sessions": 4, "msg_slots": 8, "max_subs": 16,
                "queue_depth": 4})
    b.listen("0.0.0.0", 1883)
    asyncio.create_task(sensor(b))
    await b.serve()


asyncio.run(main())
