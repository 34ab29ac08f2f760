"""CPU per received WebSocket frame: Tornado's reader against collab's.

    .venv/bin/python scripts/frame_bench.py [--frames 200000] [--payload 16] [--runs 3]

For each reader, starts a bare Tornado server in a child process whose handler
only counts binary messages, connects one raw client, sends ``--frames`` masked
binary frames pipelined (written in 64 KiB batches), waits for the server to say
it counted them all, and reads the server's CPU time (user + system) from
/proc/PID/stat before and after. Prints µs of server CPU per frame, best of
``--runs``. Timings are noisy on a shared machine: compare within one sitting.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import struct
import subprocess
import sys
import time

TICKS_S = os.sysconf("SC_CLK_TCK")
# This checkout's collab, whichever one the environment installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve(reader: str, frames: int) -> None:
    import asyncio

    import tornado.web
    import tornado.websocket

    from collab.web.reading import BufferedReadProtocol

    class Counter(tornado.websocket.WebSocketHandler):
        count = 0

        def get_websocket_protocol(self):  # type: ignore[no-untyped-def]
            protocol = super().get_websocket_protocol()
            if reader == "buffered" and protocol is not None:
                return BufferedReadProtocol(self, False, protocol.params)
            return protocol

        def on_message(self, message):  # type: ignore[no-untyped-def]
            self.count += 1
            if self.count == frames:
                self.write_message("done")

    async def main() -> None:
        app = tornado.web.Application([(r"/", Counter)])
        server = app.listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_S


def frame(payload: bytes) -> bytes:
    """One masked binary frame, as a client sends it."""
    from tornado.util import _websocket_mask

    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x82, 0x80 | size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, size)
    return header + mask + _websocket_mask(mask, payload)


def run_once(reader: str, frames: int, payload_bytes: int) -> float:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", reader, "--frames", str(frames)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        one = frame(os.urandom(payload_bytes))
        per_batch = max(1, 65536 // len(one))
        batch = one * per_batch
        time.sleep(0.2)
        before = cpu_s(child.pid)
        sent = 0
        while sent < frames:
            n = min(per_batch, frames - sent)
            sock.sendall(batch if n == per_batch else one * n)
            sent += n
        answer = sock.recv(64)
        assert b"done" in answer, answer
        after = cpu_s(child.pid)
        sock.close()
        return (after - before) / frames * 1e6
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--payload", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", choices=("tornado", "buffered"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.frames)
        return
    for reader in ("tornado", "buffered"):
        results = [run_once(reader, args.frames, args.payload) for _ in range(args.runs)]
        print(
            f"{reader:9s} {args.frames} frames of {args.payload} B: server CPU "
            f"{min(results):.2f} µs/frame (runs: {', '.join(f'{r:.2f}' for r in results)})"
        )


if __name__ == "__main__":
    main()
