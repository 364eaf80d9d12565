"""The orchestrator role: a signed Offer at start and periodically, quotes with fresh ticket params
on `/castnet/quote/1`, segment jobs with tickets on `/castnet/job/1` (tickets validated, session
balance checked, the ladder transcoded in a worker thread, renditions and a signed JobResult
returned) and AI segments on `/castnet/ai/1` (the same, with a pipeline run in a thread by
ai_compute), one job staged behind each computing one (its intake done meanwhile), a clear
"busy" answer beyond that, and winning tickets queued and redeemed."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import trio
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID

from events import kinds as k
from events.crypto import Signer, keccak256
from events.envelope import SignedEvent, decode_verified
from events.errors import EventError
from media.errors import MediaError
from media.profiles import MIN_BITRATE, Profile, parse_profiles
from media.source import probe
from media.transcoder import TranscodeResult, transcode
from node.ledger import Ledger
from node.orchestrator.ai_compute import AiCompute
from node.orchestrator.earnings import Earnings
from node.orchestrator.results import KeptResults
from node.orchestrator.settings import (
    OrchestratorConfig,
    OrchestratorStats,
    capabilities,
    swap_renditions,
)
from node.orchestrator.streams import answering
from node.orchestrator.workers import WORKER_PROTOCOL, WorkerFailed, WorkerPool
from node.protocol import (
    AI_DONE,
    AI_PROTOCOL,
    AI_REQUEST,
    BAD_REQUEST,
    BALANCE,
    BUSY,
    FAILED,
    JOB_DONE,
    JOB_PROTOCOL,
    JOB_REQUEST,
    QUOTE,
    QUOTE_PROTOCOL,
    QUOTE_REQUEST,
    REASSIGNED,
    RESULT_PROTOCOL,
    VERSION,
    AiSpec,
    JobSpec,
    Refused,
    estimate_pixels,
    params_to_wire,
    rendition_meta,
    ticket_from_wire,
)
from node.view import NodeView
from node.writer import EventWriter
from p2p.framing import MessageStream
from p2p.node import P2PNode
from payments.balance import Balances, segment_fee
from payments.errors import PaymentError
from payments.interfaces import RedemptionRecord, RedemptionState, TicketStore

log = logging.getLogger("castnet.orchestrator")
MAX_TICKETS_PER_JOB = 256
MAX_EVENTS_PER_JOB = 512
MAX_REDEMPTIONS_PER_PASS = 1000  # redemptions in one pass of redeem_due
# jobs taken per compute slot: one computing and one staged behind it (its tickets taken and its
# job claimed while the other computes), so a gateway's next segment overlaps the current one
STAGED = 2
CAUSAL_WAIT_S = 10.0  # how long a job waits for the gateway's events it depends on


class Orchestrator:
    """Serves quotes and jobs on a started P2PNode; start with `await nursery.start(o.run)`."""

    def __init__(
        self,
        node: P2PNode,
        signer: Signer,
        ledger: Ledger,
        config: OrchestratorConfig,
        secret: bytes | None = None,
        on_die: Callable[[], None] | None = None,
        ticket_store: TicketStore | None = None,
    ) -> None:
        self.node = node
        self.ledger = ledger
        self.config = config
        self.writer = EventWriter(node, signer)
        self.address = signer.address
        self.view = NodeView(node.store)
        self.earnings = Earnings(self.address, ledger, config, secret, ticket_store)
        self.balances = Balances()
        self.stats = OrchestratorStats()
        self.active = 0  # jobs taken: computing, or staged behind one (tickets taken, claimed)
        self._computing = trio.CapacityLimiter(max(1, config.capacity))
        self._fault_computes = 0  # computes started, for the "starve-after-2" fault
        self._held: dict[bytes, Fraction] = {}  # job id -> fee estimate held until it settles
        self.results = KeptResults()  # for a gateway that restarted before it got them
        self.capabilities = capabilities()
        self.ai = AiCompute(config.inference, required=config.inference.models_dir is not None,
                            fault=config.fault)  # fmt: skip
        self.offered: tuple[str, ...] = ()  # the capabilities of the last offer
        self.dead = False
        self._on_die = on_die
        self.workers = WorkerPool(
            node, config.workers, config.allow_any_worker, config.worker_timeout_s
        )

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        host = self.node.running.host
        host.set_stream_handler(QUOTE_PROTOCOL, self._handle_quote)
        host.set_stream_handler(JOB_PROTOCOL, self._handle_job)
        host.set_stream_handler(RESULT_PROTOCOL, self._handle_result)
        if self.config.ai:
            await trio.to_thread.run_sync(self.ai.start)
            await trio.to_thread.run_sync(self.ai.warm_up, self.config.ai_warm)
            host.set_stream_handler(AI_PROTOCOL, self._handle_ai)
        host.set_stream_handler(WORKER_PROTOCOL, self.workers.handle_register)
        await self._warm_chain_view()
        await self.publish_offer()
        task_status.started(self)
        while True:
            await trio.sleep(self.config.offer_interval_s)
            self.results.expire()  # also when no job finishes or is fetched for a while
            if self.dead:  # a node that died (fault injection) has no store left to offer from
                await trio.sleep_forever()
            await self.publish_offer()

    async def publish_offer(self) -> SignedEvent:
        price = self.config.price_per_pixel
        self.offered = self.capabilities + await trio.to_thread.run_sync(self.ai.capabilities)
        offer = k.Offer(
            price.numerator,
            price.denominator,
            self.offered,
            self.config.capacity,
            self.node.peer_id,
            tuple(self.node.addrs),
        )
        return await self.writer.emit(offer)

    async def redeem_due(self) -> int:
        """Redeem the winning tickets whose params have expired, one transaction at a time (so a
        shutdown waits for one, not for every ticket due), and log each redemption."""
        redeemed = 0
        for _ in range(MAX_REDEMPTIONS_PER_PASS):
            changed = await self.earnings.redeem_one()
            if not changed:
                break
            with trio.CancelScope(shield=True):  # the queue moved on: the log must say so too
                redeemed += await self._log_redemptions(changed)
        return redeemed

    async def _log_redemptions(self, changed: list[RedemptionRecord]) -> int:
        for record in changed:
            ticket = record.winning.ticket
            if record.state is RedemptionState.REDEEMED:
                self.stats.redeemed += 1
                self.stats.redeemed_wei += ticket.face_value
                await self.writer.emit(
                    k.TicketRedeemed(
                        record.ticket_hash,
                        ticket.sender,
                        ticket.face_value,
                        record.tx_hash,
                        record.redeemed_block,
                    )
                )
            else:
                log.warning("ticket %s: %s (%s)", record.ticket_hash.hex()[:16],
                            record.state.value, record.last_error)  # fmt: skip
        return sum(r.state is RedemptionState.REDEEMED for r in changed)

    def pending_redemptions(self) -> int:
        return self.earnings.pending()

    # -- quote -----------------------------------------------------------------------------

    async def _handle_quote(self, stream: INetStream) -> None:
        cfg = self.node.config
        ms = MessageStream(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)
        async with answering(stream, ms, "quote request"):
            _, version, sender = await ms.expect(QUOTE_REQUEST, 3)
            if version != VERSION or type(sender) is not bytes or len(sender) != 20:
                raise Refused(BAD_REQUEST, "quote request: bad version or sender address")
            if self.dead:
                raise Refused(FAILED, "orchestrator is shutting down")
            if self.active >= self.config.capacity * STAGED:
                self.stats.busy += 1
                raise Refused(BUSY, f"all {self.config.capacity} slots are in use")
            params = await self.earnings.params(sender)
            await ms.send([QUOTE, params_to_wire(params), self.config.capacity, self.active])

    async def _warm_chain_view(self) -> None:
        """Read the chain once before advertising: a chain client's first view is slow (~90 ms
        on the embedded EVM, cold), and would otherwise be paid by the first gateway's quote."""
        try:
            await trio.to_thread.run_sync(self.ledger.view)
        except Exception as exc:  # the chain is not reachable yet: the first quote will say so
            log.warning("cannot read the chain at start: %r", exc)

    # -- job -------------------------------------------------------------------------------

    async def _handle_job(self, stream: INetStream) -> None:
        await self._serve(stream, JOB_REQUEST, self._run_job)

    async def _handle_ai(self, stream: INetStream) -> None:
        await self._serve(stream, AI_REQUEST, self._run_ai)

    async def _handle_result(self, stream: INetStream) -> None:
        cfg = self.node.config
        await self.results.serve(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)

    async def _serve(self, stream: INetStream, kind: int, run: Callable[..., Any]) -> None:
        """A segment request of `kind`: spec, the gateway's events, tickets and the segment up;
        `run` answers the reply and the output blobs that follow it."""
        cfg = self.node.config
        ms = MessageStream(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)
        async with answering(stream, ms, "job", self._count_refusal):
            _, version, spec_wire, raws, tickets_wire = await ms.expect(kind, 5)
            segment = await ms.receive_blob(cfg.max_blob_bytes)
            if version != VERSION:
                raise Refused(BAD_REQUEST, f"unsupported job version {version!r}")
            if self.dead:
                raise Refused(FAILED, "orchestrator is shutting down")
            if self.active >= self.config.capacity * STAGED:
                self.stats.busy += 1
                raise Refused(BUSY, f"all {self.config.capacity} slots are in use")
            self.active += 1
            try:
                reply, blobs = await run(spec_wire, raws, tickets_wire, segment,
                                         stream.muxed_conn.peer_id)  # fmt: skip
            finally:
                self.active -= 1
            await ms.send(reply)
            for blob in blobs:
                await ms.send_blob(blob)
            self.stats.jobs += 1

    def _count_refusal(self) -> None:
        self.stats.refused += 1

    async def _run_job(
        self, spec_wire: Any, raws: Any, tickets_wire: Any, segment: bytes, peer: ID
    ) -> tuple[list[Any], list[bytes]]:
        spec = JobSpec.from_wire(spec_wire)
        return await self._run(spec, raws, tickets_wire, segment, peer, self._transcode_job)

    async def _transcode_job(
        self, spec: JobSpec, sender: bytes, tickets_wire: Any, segment: bytes
    ) -> tuple[list[Any], list[bytes]]:
        try:
            ladder = parse_profiles(spec.profiles)
            info = await trio.to_thread.run_sync(probe, segment)
        except MediaError as exc:
            raise Refused(BAD_REQUEST, f"bad segment or profiles: {exc}") from None
        pixels = estimate_pixels(info.width, info.height, info.rate, info.duration or 0.0, ladder)
        await self._charge_ahead(tickets_wire, sender, spec.job_id, pixels)
        try:
            await self._claim(spec.job_id)
            async with self._computing:  # a staged job waits here, its intake done
                if self.config.fault == "starve-after-2":
                    # counted as computes start, so staged jobs do not all see the same count
                    self._fault_computes += 1
                    if self._fault_computes > 2:
                        ladder = tuple(dataclasses.replace(p, bitrate=MIN_BITRATE) for p in ladder)
                started = time.perf_counter()
                result = await self._compute(segment, ladder, spec)
            compute_ms = round((time.perf_counter() - started) * 1000)
            if self.config.fault == "wrong-renditions":
                result = swap_renditions(result)
            output_pixels = sum(r.pixel_count for r in result.renditions)
            blobs = [r.data for r in result.renditions]
            raw = await self._settle(sender, spec.job_id, blobs, output_pixels, compute_ms)
        finally:
            self._release(sender, spec.job_id)
        return [JOB_DONE, raw, [rendition_meta(r) for r in result.renditions]], blobs

    async def _run_ai(
        self, spec_wire: Any, raws: Any, tickets_wire: Any, segment: bytes, peer: ID
    ) -> tuple[list[Any], list[bytes]]:
        spec = AiSpec.from_wire(spec_wire)
        return await self._run(spec, raws, tickets_wire, segment, peer, self._infer_job)

    async def _infer_job(
        self, spec: AiSpec, sender: bytes, tickets_wire: Any, segment: bytes
    ) -> tuple[list[Any], list[bytes]]:
        plan = await trio.to_thread.run_sync(self.ai.plan, spec, segment)
        await self._charge_ahead(tickets_wire, sender, spec.job_id, plan.pixels)
        try:
            await self._claim(spec.job_id)
            async with self._computing:
                started = time.perf_counter()
                output = await trio.to_thread.run_sync(self.ai.run, plan, segment)
            compute_ms = round((time.perf_counter() - started) * 1000)
            self.stats.ai_segments += 1
            raw = await self._settle(sender, spec.job_id, [output.data], output.pixels, compute_ms)
        finally:
            self._release(sender, spec.job_id)
        if self.offered != self.capabilities + await trio.to_thread.run_sync(self.ai.capabilities):
            await self.publish_offer()  # a model turned warm: say so now, not at the next interval
        return [AI_DONE, raw, [output.meta()]], [output.data]

    async def _run(
        self,
        spec: JobSpec | AiSpec,
        raws: Any,
        tickets_wire: Any,
        segment: bytes,
        peer: ID,
        compute: Callable[..., Awaitable[tuple[list[Any], list[bytes]]]],
    ) -> tuple[list[Any], list[bytes]]:
        """The gateway's events checked (the job is assigned to us and not yet claimed, so a
        peer replaying them later cannot take its place), then `compute(spec, sender, tickets,
        segment)`; its reply and outputs are kept for a fetch by the same peer
        (node.orchestrator.results), a job that fails keeps nothing."""
        sender = await self._ingest_gateway_events(raws, spec.job_id, peer)
        token = self.results.started(spec.job_id, peer)
        try:
            reply, blobs = await compute(spec, sender, tickets_wire, segment)
            self.results.finished(spec.job_id, token, reply, blobs)
            return reply, blobs
        finally:
            self.results.failed(spec.job_id, token)  # a no-op once finished

    async def _charge_ahead(
        self, tickets_wire: Any, sender: bytes, job_id: bytes, pixels: int
    ) -> None:
        """Take the job's tickets, then refuse unless the sender's balance covers the estimate;
        the estimate is held against the balance until the job settles (or fails: `_release`),
        so a job staged behind another is not covered by the same balance."""
        await self._take_tickets(tickets_wire, sender, job_id)
        estimate = segment_fee(pixels, self.config.price_per_pixel)
        try:
            self.balances.check(sender.hex(), estimate)
        except PaymentError as exc:
            raise Refused(BALANCE, str(exc)) from None
        self.balances.debit(sender.hex(), estimate)
        self._held[job_id] = estimate
        if self.config.fault == "die-mid-job":
            self._die()
            raise Refused(FAILED, "unreachable")  # the host is gone; nothing is sent

    def _release(self, sender: bytes, job_id: bytes) -> None:
        """Give back the estimate held for a job (a no-op once released)."""
        held = self._held.pop(job_id, None)
        if held is not None:
            self.balances.credit(sender.hex(), held)

    async def _claim(self, job_id: bytes) -> None:
        """Accept the assignment in the log, at the assigned price, before doing the work."""
        state = await self.view.refresh()
        job = state.jobs.get(job_id)
        if job is None or job.assignee != self.address or job.status != "assigned":
            raise Refused(REASSIGNED, "the job was reassigned before it was claimed")
        claim = k.JobClaimed(job_id, job.price_per_unit, job.pixels_per_unit)
        await self.writer.emit(claim, to=job.poster)

    async def _settle(
        self, sender: bytes, job_id: bytes, blobs: list[bytes], pixels: int, compute_ms: int
    ) -> bytes:
        """Charge the output's pixels (in place of the held estimate) and sign the result, unless
        the job went elsewhere."""
        self._release(sender, job_id)
        self.balances.debit(sender.hex(), segment_fee(pixels, self.config.price_per_pixel))
        state = await self.view.refresh()
        job = state.jobs.get(job_id)
        if job is None or job.assignee != self.address or job.status != "claimed":
            raise Refused(REASSIGNED, "the job was reassigned while it ran")
        hashes = tuple(keccak256(b) for b in blobs)
        if self.config.fault == "inflate-pixels":  # bill for twice the pixels it made
            pixels *= 2
        named = keccak256(job_id) if self.config.fault == "wrong-job" else job_id
        event = await self.writer.emit(k.JobResult(named, hashes, pixels, compute_ms), to=sender)
        return event.raw

    # -- compute: an attached worker when one is free, else (or when it fails) in-process ------

    async def _compute(
        self, segment: bytes, ladder: tuple[Profile, ...], spec: JobSpec
    ) -> TranscodeResult:
        worker = self.workers.acquire()
        if worker is not None:
            try:
                result = await self.workers.transcode(
                    worker, segment, spec.profiles, spec.preset, len(ladder)
                )
                self.stats.worker_segments += 1
                log.info("segment of job %s computed by worker %s",
                         spec.job_id.hex()[:16], worker.peer_id)  # fmt: skip
                return result
            except WorkerFailed as exc:
                self.stats.worker_failures += 1
                log.warning("worker failed mid-segment (%s); computing it in-process", exc)
            finally:
                self.workers.release(worker)
        try:
            result = await trio.to_thread.run_sync(
                lambda: transcode(segment, ladder, preset=spec.preset, encoder=self.config.encoder)
            )
        except MediaError as exc:
            raise Refused(FAILED, f"transcode failed: {exc}") from None
        self.stats.local_segments += 1
        return result

    async def _ingest_gateway_events(self, raws: Any, job_id: bytes, peer: ID) -> bytes:
        """Store the gateway's JobPosted/JobAssigned/TicketIssued (its job chain towards us)
        before acting on them, so this log never holds a result or receipt ahead of its cause.
        Returns the gateway's address (the principal its job chain speaks for)."""
        if not isinstance(raws, list) or not raws or len(raws) > MAX_EVENTS_PER_JOB:
            raise Refused(BAD_REQUEST, "a job carries 1..512 of the gateway's events")
        try:
            events = [decode_verified(raw) for raw in raws if type(raw) is bytes]
        except EventError as exc:
            raise Refused(BAD_REQUEST, f"bad event: {exc}") from None
        authors = {e.author for e in events}
        if len(events) != len(raws) or len(authors) != 1:
            raise Refused(BAD_REQUEST, "job events must be signed events of one gateway")
        (chain,) = authors
        await self.node.receive_job_events(events, peer)
        sender = self.node.jobs.principal_of(chain) or chain
        need = max(e.seq for e in events)
        with trio.move_on_after(CAUSAL_WAIT_S):
            await self.node.wait_until(lambda: self.node.ingest.heads.get(chain, 0) >= need)
        if self.node.ingest.heads.get(chain, 0) < need:
            raise Refused(BAD_REQUEST, "the gateway's earlier events never arrived")
        state = await self.view.refresh()
        job = state.jobs.get(job_id)
        if job is None or job.poster != sender:
            raise Refused(BAD_REQUEST, f"job {job_id.hex()[:16]} was not posted by the sender")
        if job.assignee != self.address or job.status != "assigned":
            raise Refused(BAD_REQUEST, f"job {job_id.hex()[:16]} is not assigned to this node")
        return sender

    async def _take_tickets(self, tickets_wire: Any, sender: bytes, job_id: bytes) -> None:
        """Validate and credit the job's tickets in one worker-thread hop, then log a
        TicketReceived for each one taken in one durable append (the tickets taken before a
        refused one stay credited and logged)."""
        if not isinstance(tickets_wire, list) or len(tickets_wire) > MAX_TICKETS_PER_JOB:
            raise Refused(BAD_REQUEST, f"a job carries at most {MAX_TICKETS_PER_JOB} tickets")
        tickets = [ticket_from_wire(t) for t in tickets_wire]
        receipts, refusal = await self.earnings.receive(tickets, sender)
        taken = []
        for signed, receipt in zip(tickets, receipts, strict=False):
            self.stats.tickets += 1
            self.balances.credit(sender.hex(), receipt.credit)
            won = receipt.winning is not None
            self.stats.won += won
            t = signed.ticket
            taken.append(
                k.TicketReceived(receipt.ticket_hash, sender, t.face_value, t.win_prob, won, job_id)
            )
        await self.writer.emit_many(taken)
        if refusal is not None:
            raise refusal

    def _die(self) -> None:
        """Fault injection: vanish mid-job like a killed process (the host stops answering)."""
        log.warning("orchestrator %s: dying mid-job (fault injection)", self.address.hex()[:8])
        self.dead = True
        if self._on_die is not None:
            self._on_die()
