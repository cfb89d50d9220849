#!/usr/bin/env python3
"""A webhook receiver for the load test: answers every POST with 200 at once.

    python3 benches/webhook_receiver.py PORT

HTTP/1.1 with keep-alive on asyncio's low-level protocol API (no framework, no threads),
so it answers thousands of requests a second on one core and is never what the benchmark
measures. It prints how many requests it answered to stderr when it is stopped (SIGTERM).
"""

import asyncio
import signal
import sys

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
answered = 0


class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        global answered
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            answered += 1
            self.transport.write(ANSWER)


async def main(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    server = await loop.create_server(Receiver, "127.0.0.1", port, backlog=1024)
    async with server:
        await stop
    print(f"webhook receiver: {answered} requests answered", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
