"""What a small message costs on a castnet connection (Noise + yamux, py-libp2p): castnet's lean
wire path (p2p/wire.py: buffered TCP reads, yamux frames) against py-libp2p's own, alternated in
the same run.

Two hosts in this process on 127.0.0.1, one stream between them. Per round, fresh hosts and:
- `echo`: `--messages` round trips of a `--size`-byte message (each side writes one frame and
  waits for the other's: how a paced gossip event travels, one frame per wake-up);
- `burst`: `--messages` messages written back to back and read on the other side (under load).
Figures: the process's CPU per message (both ends: one write and one read of a frame), wall time
per round trip, medians over the rounds of each way.

Usage: python bench/mux_bench.py [--rounds 6] [--messages 2000] [--size 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import multiaddr
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libp2p.crypto.secp256k1 import create_new_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402

from p2p.config import P2PConfig  # noqa: E402
from p2p.framing import read_exactly  # noqa: E402
from p2p.host import build_host, quiet_libp2p  # noqa: E402
from p2p.wire import use_lean_wire  # noqa: E402

PROTOCOL = TProtocol("/castnet/mux-bench/1")
READ_TIMEOUT_S = 10.0


async def _read_exactly(stream: Any, n: int) -> bytes:
    return await read_exactly(stream, n, READ_TIMEOUT_S)


async def one_round(mode: str, messages: int, size: int) -> dict[str, float]:
    config = P2PConfig(listen=("/ip4/127.0.0.1/tcp/0",))
    a, b = (build_host(create_new_key_pair(), config) for _ in range(2))
    done = trio.Event()

    async def serve(stream: Any) -> None:
        if mode == "echo":
            for _ in range(messages):
                await stream.write(await _read_exactly(stream, size))
        else:
            await _read_exactly(stream, size * messages)
            await stream.write(b"k")
        done.set()

    b.set_stream_handler(PROTOCOL, serve)
    listen = [multiaddr.Multiaddr(a) for a in config.listen]
    async with a.run(listen_addrs=listen), b.run(listen_addrs=listen):
        addr = b.get_addrs()[0]
        await a.connect(info_from_p2p_addr(addr))
        stream = await a.new_stream(b.get_id(), [PROTOCOL])
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        await stream.write(payload)  # warm up: the stream and its handler are open
        if mode == "echo":
            await _read_exactly(stream, size)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if mode == "echo":
            for _ in range(messages - 1):
                await stream.write(payload)
                await _read_exactly(stream, size)
        else:
            for _ in range(messages - 1):
                await stream.write(payload)
            await _read_exactly(stream, 1)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        with trio.fail_after(10):
            await done.wait()
        await stream.close()
    frames = (messages - 1) * (2 if mode == "echo" else 1)
    return {"cpu_us_per_message": cpu / frames * 1e6, "wall_us_per_message": wall / frames * 1e6}


async def run(rounds: int, messages: int, size: int) -> list[dict[str, Any]]:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(rounds):
        for mode in ("echo", "burst"):
            for way in ("lean", "stock") if r % 2 == 0 else ("stock", "lean"):
                use_lean_wire(way == "lean")
                results.setdefault((mode, way), []).append(await one_round(mode, messages, size))
    use_lean_wire(True)
    rows = []
    for (mode, way), samples in sorted(results.items()):
        rows.append({
            "mode": mode, "way": way, "rounds": len(samples),
            "cpu_us_per_message": statistics.median(s["cpu_us_per_message"] for s in samples),
            "wall_us_per_message": statistics.median(s["wall_us_per_message"] for s in samples),
            "cpu_us_each": [round(s["cpu_us_per_message"], 1) for s in samples],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quiet_libp2p()
    rows = trio.run(run, args.rounds, args.messages, args.size)
    if args.json:
        print(json.dumps({"size": args.size, "messages": args.messages, "rows": rows}))
        return
    print(f"{args.messages} messages of {args.size} bytes, {args.rounds} rounds per way (medians)")
    print(f"{'mode':6} {'way':6} {'CPU us/message':>15} {'wall us/message':>16}  CPU per round")
    for row in rows:
        print(f"{row['mode']:6} {row['way']:6} {row['cpu_us_per_message']:15.1f} "
              f"{row['wall_us_per_message']:16.1f}  {row['cpu_us_each']}")  # fmt: skip
    for mode in ("echo", "burst"):
        lean, stock = (next(r for r in rows if r["mode"] == mode and r["way"] == w)
                       for w in ("lean", "stock"))  # fmt: skip
        saved = 1 - lean["cpu_us_per_message"] / stock["cpu_us_per_message"]
        print(f"{mode}: lean saves {saved:.0%} of the CPU per message")


if __name__ == "__main__":
    main()
