"""`castnet demo`: the main job end to end in one process. A generated (or given) clip is
transcoded by a gateway on N orchestrators over 127.0.0.1 libp2p, paid with tickets; winning
tickets are redeemed; every node's log is audited. Returns a JSON-able summary. With `ai` (live
AI) the clip is instead streamed over TCP at real-time pace into a live session whose segments
run through the AI pipeline (`--ai style`): a live HLS playlist with the clip's audio, and each
segment's added latency."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import trio

from chain.client import ProtocolParams
from events.crypto import LocalKeySigner, to_checksum
from inference.engine import InferenceConfig
from node.chain_ledger import ChainLedger
from node.gateway.live import LiveConfig, LiveReport, LiveSession
from node.gateway.live_ai import LiveAi
from node.gateway.role import GatewayConfig, JobReport, SegmentOutcome
from node.ledger import Ledger
from node.local.network import Network, NetworkPlan, default_plan, key_for, open_network
from node.local.sender import PacedSender, clip_to_ts
from node.local.summary import audit, ticket_terms
from node.local.summary import summary as run_summary

log = logging.getLogger("castnet.demo")
MARKER = ".castnet-demo"  # marks an output folder the demo may replace
REWARD_ROUND_BLOCKS = 20  # round length on the embedded chain
BONDED_SHARE_PPB = 480_000_000  # the demo's bonds as a share of the token supply: 48%


@dataclass(frozen=True, slots=True)
class DemoOptions:
    input: Path | None = None
    out: Path = Path("castnet-demo-out")
    orchestrators: int = 3
    profiles: str = "720p,480p,360p"
    preset: str = "veryfast"
    size: str = "1920x1080"  # of the generated clip
    seconds: float = 10.0
    data_dir: Path | None = None  # node logs; a temp folder when None (kept, path reported)
    faults: tuple[str, ...] = ()  # per orchestrator: "", "wrong-renditions", "die-mid-job"
    gateway_deposit: int = 10**18
    gateway_reserve: int = 10**18
    job_timeout_s: float = 120.0
    capacity: int = 2  # concurrent segments per orchestrator
    # wei each ticket is worth, and the cheapest price per pixel; None: the chain's default
    ticket_ev: int | None = None
    price: int | None = None
    ai: LiveAi | None = None  # live AI instead of transcoding the file
    segment_s: float = 2.0  # live AI segment length
    verify: str = "sample"  # the gateway's verify policy (node.gateway.verify_policy)


# (ticket EV in wei, cheapest price in wei per output pixel) per chain. A winning ticket pays its
# face value; tickets carry the fee, so the winners to expect are about fees / face value.
# On a chain a winner must pay for its redemption: face value is 100x the gas cost (100k gas at
# 1 gwei: 0.01 ETH). The default clip (10 s of 1080p, 5 segments of ~94 Mpixel over the
# 720p/480p/360p ladder) at 0.2-0.3 gwei/pixel owes ~0.1 ETH; paid ahead with a 10% margin in
# tickets of 0.005 ETH EV that win 1 in 2, that is ~30 tickets and ~15 winners to expect, and
# P(none) = 0.5^30 ~ 1e-9.
TICKET_EV, BASE_PRICE = 5 * 10**15, 2 * 10**8
# entered once the network is up, left before it stops; what it yields joins the summary
Attach = Callable[[Network], AbstractAsyncContextManager[dict[str, Any]]]


def generate_clip(path: Path, size: str, seconds: float, rate: int = 30) -> Path:
    """A test pattern with a tone, keyframes every 2 s (so segments are cut without re-encoding)."""
    width, height = (int(x) for x in size.split("x"))
    graph = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    with av.open(graph, format="lavfi") as src, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = 2 * rate
        video.codec_context.options = {"preset": "ultrafast", "sc_threshold": "0", "crf": "18"}
        sound = out.add_stream("aac", rate=48_000)
        for frame in src.decode(video=0):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        tone = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
        with av.open(tone, format="lavfi") as sine:
            for aframe in sine.decode(audio=0):
                out.mux(sound.encode(aframe))
        out.mux(sound.encode(None))
    return path


def prepare_out(out: Path) -> None:
    """Refuse to overwrite anything but an earlier demo's output."""
    if out.exists():
        if (out / MARKER).is_file():
            shutil.rmtree(out)
        elif out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise SystemExit(f"castnet demo: {out} exists and is not an earlier demo's output")


def run_demo(
    options: DemoOptions,
    progress: Callable[[str], None] | None = None,
    attach: Attach | None = None,
    serve: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    return trio.run(demo, options, progress or (lambda line: None), attach, serve)


async def demo(
    options: DemoOptions,
    say: Callable[[str], None],
    attach: Attach | None = None,
    serve: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The job end to end. `attach(net)` (e.g. a metrics listener) runs while the network is
    up. With `serve`, the network stays up after the job: `serve(summary)` gets the audited
    summary, then the demo runs until SIGINT (Ctrl-C) and stops its nodes cleanly."""
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="castnet-demo-nodes-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    source = options.input
    if source is None:
        say(f"generating a {options.seconds:g} s {options.size} test clip")
        source = await trio.to_thread.run_sync(
            generate_clip, data_dir / "input.mp4", options.size, options.seconds
        )
    prepare_out(options.out)
    default_ev, default_price = TICKET_EV, BASE_PRICE
    ev = Fraction(options.ticket_ev if options.ticket_ev is not None else default_ev)
    price = options.price if options.price is not None else default_price
    # the gateway accepts the demo's prices and ticket values (orchestrators ask up to 2x base)
    gateway_cfg = GatewayConfig(profiles=options.profiles, preset=options.preset,
                                job_timeout_s=options.job_timeout_s, verify=options.verify,
                                max_price_per_pixel=Fraction(4 * price), max_ev=4 * ev,
                                max_total_ev=max(Fraction(10**17), 10_000 * ev))  # fmt: skip
    inference = InferenceConfig(preset="ultrafast")
    warm: tuple[str, ...] = ()
    if options.ai is not None:  # loaded and measured at start: the offers state their fps
        width, height = options.ai.infer_size or (int(v) for v in options.size.split("x"))
        warm = (f"{options.ai.pipeline}@{width}x{height}",)
    plan = default_plan(options.orchestrators, gateway_cfg, options.faults, base_price=price,
                        capacity=options.capacity, ticket_ev=ev, inference=inference,
                        ai_warm=warm)  # fmt: skip
    plan = _with_funds(plan, options.gateway_deposit, options.gateway_reserve)
    ledger = await trio.to_thread.run_sync(_ledger, options, plan)
    say(f"chain: {ledger.kind}")
    say(f"starting {options.orchestrators + 2} nodes on 127.0.0.1 (logs in {data_dir})")
    error = ""
    report: JobReport | None = None
    async with open_network(data_dir, plan, ledger) as net, AsyncExitStack() as stack:
        attached = await stack.enter_async_context(attach(net)) if attach else {}
        for o in net.orchestrators:
            caps = ",".join(o.capabilities)
            say(f"  orchestrator {to_checksum(o.address)} price {o.config.price_per_pixel} "
                f"wei/pixel, capacity {o.config.capacity}, caps {caps}")  # fmt: skip
            if options.ai is not None:  # what it measured at start, stated in its offer
                fps = ", ".join(f.capability() for f in o.ai.stated()) or "nothing (not warmed)"
                say(f"    states {fps}")

        def on_segment(done: int, total: int, outcome: SegmentOutcome) -> None:
            who = to_checksum(outcome.orchestrator)[:10] if outcome.result else "FAILED"
            say(f"  segment {outcome.seq}: {who} after {outcome.attempts} attempt(s), "
                f"{outcome.latency_s:.2f} s  [{done}/{total}]")  # fmt: skip

        # stake bonded in a round counts from the next one: the orchestrators are active then
        await trio.to_thread.run_sync(ledger.mine, REWARD_ROUND_BLOCKS)
        minted = await net.claim_rewards()
        say(f"round rewards claimed by the active orchestrators: {minted} wei of stake minted")
        live: dict[str, Any] = {}
        try:
            if options.ai is not None:
                report, live = await _live_ai(net, source, options, say)
            else:
                say(f"transcoding {source} -> {options.out} ({options.profiles})")
                report = await net.gateway.transcode_file(source, options.out, on_segment)
            (options.out / MARKER).write_text("written by castnet demo\n")
        except Exception as exc:  # reported in the summary; the audit still runs
            error = str(exc)
            say(f"{'live AI' if options.ai else 'transcode'} failed: {error}")
        redeemed = await _redeem(net, ledger)
        say(f"redeemed {redeemed} winning ticket(s)")
        await trio.to_thread.run_sync(ledger.mine, REWARD_ROUND_BLOCKS)
        minted = await net.claim_rewards()
        say(f"next round's rewards: {minted} wei of stake minted")
        converged = await net.converge()
        counts = {m.name: m.node.event_count() for m in net.members}
        summary = run_summary(net, report, options, counts, converged, error)
        if live:
            summary["live_ai"] = live
        summary["tickets"].update(ticket_terms(await net.gateway.view.refresh()))
        summary.update(attached)
        if serve is not None:
            summary["audit"] = await trio.to_thread.run_sync(audit, net, data_dir)
            summary["data_dir"] = str(data_dir)
            serve(summary)
            await _until_interrupted()
            return summary
    summary["audit"] = await trio.to_thread.run_sync(audit, net, data_dir)
    summary["data_dir"] = str(data_dir)
    return summary


async def _live_ai(
    net: Network, source: Path, options: DemoOptions, say: Callable[[str], None]
) -> tuple[JobReport, dict[str, Any]]:
    """Stream `source` at real-time pace over TCP into a live AI session; its report, and what
    the summary shows of it (where the HLS is, added latency, the fps the offers state)."""
    assert options.ai is not None
    data, seconds = await trio.to_thread.run_sync(clip_to_ts, source)
    sender = PacedSender(data, seconds)

    def on_publish(report: LiveReport, outcome: SegmentOutcome) -> None:
        who = to_checksum(outcome.orchestrator)[:10] if outcome.result else "SKIPPED"
        added = report.added_latency_s.get(outcome.seq)
        latency = f", added latency {added:.2f} s" if added is not None else ""
        say(f"  live segment {outcome.seq}: {who} after {outcome.attempts} attempt(s){latency}")

    # the first segment also loads the model on its orchestrator
    config = LiveConfig(segment_s=options.segment_s, attempt_timeout_s=60.0)
    session = LiveSession(net.gateway, sender.url, options.out, config=config,
                          on_publish=on_publish, ai=options.ai)  # fmt: skip
    say(f"live AI {options.ai.describe()}: {source} streamed at real time from {sender.url} "
        f"-> {options.out}/master.m3u8")  # fmt: skip
    try:
        live = await session.run()
    finally:
        sender.close()
    live.job.wall_s = live.wall_s
    stated = {to_checksum(o.address): [s.capability() for s in o.ai.stated()]
              for o in net.orchestrators}  # fmt: skip
    return live.job, {
        "pipeline": options.ai.pipeline,
        "options": dict(options.ai.options),
        "playlist": str(options.out / "master.m3u8"),
        "media_playlist": str(options.out / options.ai.pipeline / "index.m3u8"),
        "ended": live.ended,
        "published": len(live.published),
        "skipped": len(live.skipped),
        "failovers": live.failovers,
        "stream_fps": round(session.demand.fps, 2),
        "added_latency_s": {
            "p50": round(live.latency_percentile(0.5), 3),
            "p95": round(live.latency_percentile(0.95), 3),
            "segment_s": options.segment_s,
        },
        "stated_fps": stated,
    }


async def _until_interrupted() -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            return


def _ledger(options: DemoOptions, plan: NetworkPlan) -> Ledger:
    pool = max(1, options.orchestrators)
    names = ["gateway", "delegator", *(f"orchestrator{i}" for i in range(options.orchestrators))]
    keys = [key_for(plan.seed, name) for name in names]
    # each account gets the stake token it bonds; the supply is such that the bonds are
    # BONDED_SHARE of it, near the minter's 50% target, as on Livepeer
    bonds = [plan.delegation, *(o.self_stake for o in plan.orchestrators)]
    grants = {LocalKeySigner(key).address: bond for key, bond in zip(keys[1:], bonds, strict=True)}
    supply = sum(bonds) * 10**9 // BONDED_SHARE_PPB
    params = ProtocolParams(round_length=REWARD_ROUND_BLOCKS, pool_size=pool, genesis_supply=supply)
    return ChainLedger.embedded(keys, params, grants)


def _with_funds(plan: NetworkPlan, deposit: int, reserve: int) -> NetworkPlan:
    return dataclasses.replace(plan, gateway_deposit=deposit, gateway_reserve=reserve)


async def _redeem(net: Network, ledger: Ledger) -> int:
    """Let the ticket params expire (mine past their validity), then redeem every winner."""
    blocks = max((o.config.validity_blocks for o in net.orchestrators), default=0) + 1
    await trio.to_thread.run_sync(ledger.mine, blocks)
    redeemed = 0
    for orch, member in zip(net.orchestrators, net.members[1:-1], strict=True):
        if member.alive:
            redeemed += await orch.redeem_due()
    return redeemed
