"""What a gateway does for every paid segment, whatever the work: post the job, pick an orchestrator
that offers the work's capability (selection), quote, pay with tickets against a mirrored
balance (payment), send the segment, check the signed result (in full, or with the cheap checks
when the verify policy did not draw it: verify_policy), log verdicts, and retry a failed or late
segment elsewhere (up to 3 attempts). PIPELINE_DEPTH segments per offered slot may be in flight
(overlapping the next one's quote, tickets and upload with the one computing); a segment's
assignment and tickets go into the log in one durable append. Resuming after a restart lives in
journal. The work plugs in as a `SegmentWork`: transcoding (role) and inference (ai_jobs)."""

from __future__ import annotations

import dataclasses
import logging
import time
from fractions import Fraction
from typing import Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from events import kinds as k
from events.crypto import Signer
from events.envelope import SignedEvent
from events.errors import EventError
from events.state import OfferState
from node.gateway.ai_recheck import AiRechecker, recheck_config
from node.gateway.answers import read_result
from node.gateway.checks import result_problems as result_problems
from node.gateway.journal import JournalResume, KeptSegment, SegmentJournal, record
from node.gateway.payment import Payer, close, issued
from node.gateway.quotes import QuotesAhead
from node.gateway.scheduler import SegmentScheduler
from node.gateway.selection import Candidate, Selector
from node.gateway.verify_policy import VerifyPolicy
from node.gateway.work import GatewayConfig, JobReport, SampledWork, SegmentOutcome, SegmentWork
from node.ledger import Ledger
from node.protocol import (
    BAD_REQUEST,
    BALANCE,
    BUSY,
    EXPIRED,
    FAILED,
    PAYMENT,
    VERSION,
    Refused,
    ticket_to_wire,
)
from node.view import NodeView
from node.writer import EventWriter
from p2p.errors import P2PError
from p2p.framing import MessageStream
from p2p.node import P2PNode
from payments.balance import segment_fee
from payments.errors import ParamsExpired, PaymentError
from payments.sender import Sender, SenderConfig
from payments.ticket import SignedTicket
from storage.errors import StoreClosed

log = logging.getLogger("castnet.gateway")
MAX_ATTEMPTS = 3
MAX_EXPIRED = 3  # ticket params that expire on the way, asked again before it counts
# a connection that broke before the quote (a stale libp2p connection still listed, a reset):
# the same orchestrator is dialled again this many times, after REDIAL_BACKOFF_S, x2 each time,
# before the failure marks it down (a lone orchestrator would otherwise be lost for the job)
MAX_REDIALS = 2
REDIAL_BACKOFF_S = 0.2
# segments in flight per offered slot: 2 lets the next one's quote, tickets, upload and intake
# overlap the one computing (orchestrators stage one job per slot: node.orchestrator.role.STAGED).
# A gateway restarted mid-job fetches the result of such a job from its orchestrator (journal)
PIPELINE_DEPTH = 2
MAX_PICKS = 30  # busy answers do not count as attempts, but are bounded too
# segments given places per orchestrator slot: PIPELINE_DEPTH there (one computing, the others
# staged behind it) and two more being checked here, so a check never holds the next upload
# back: an orchestrator's first two segments are both checked in full (verify_policy), and with
# one place for checks the segment to stage waited for the first of them to finish, leaving the
# orchestrator idle (640x360 bench: 0.21 s of a 3 s job)
CHECKED_PER_SLOT = 2
BUSY_ANSWER = "busy"
BUSY_BACKOFF_MAX_S = 5.0  # an orchestrator busy with jobs we do not know of is asked again later


class SegmentMarket(JournalResume):
    """The gateway's side of the job market (node, wallet, selection, payments, verdicts)."""

    def __init__(
        self, node: P2PNode, signer: Signer, ledger: Ledger, config: GatewayConfig
    ) -> None:
        self.node = node
        self.ledger = ledger
        self.config = config
        self.writer = EventWriter(node, signer, config.summary_interval_s)
        self.address = signer.address
        self.view = NodeView(node.store)
        self.depth = PIPELINE_DEPTH
        self.selector = Selector(max_price=config.max_price_per_pixel, suspend_s=config.suspend_s,
                                 depth=self.depth)  # fmt: skip
        self._selectors = {self.selector.capability: self.selector}
        self.sender = Sender(signer, SenderConfig(config.max_ev, config.max_total_ev), ledger)
        self.payer = Payer(node, signer.address, self.sender, ledger, config.fee_margin)
        self.mirror = self.payer.mirror  # what each orchestrator's balance for us should be
        self.verdicts: list[k.JobVerdict] = []
        self._slot_freed = trio.Event()
        self._uploads: dict[ID, trio.Lock] = {}  # per orchestrator peer: one upload at a time
        self.quotes = QuotesAhead(self.payer)  # for each job's first segment
        self.verify_policy = VerifyPolicy(config.verify, config.verify_fraction)
        self.ai_rechecker = AiRechecker(config.ai_recheck, recheck_config(config.ai_models_dir))
        # every job's segments take turns for orchestrators (node.gateway.scheduler)
        self.scheduler = SegmentScheduler(self.segment_bound)

    def selector_for(self, capability: str) -> Selector:
        """A selector for `capability` that shares slots, latencies and suspensions with every
        other: an orchestrator's capacity covers all the work it takes."""
        selector = self._selectors.get(capability)
        if selector is None:
            selector = Selector(capability, self.config.max_price_per_pixel, self.config.suspend_s,
                                self.depth)  # fmt: skip
            selector.local = self.selector.local
            self._selectors[capability] = selector
        return selector

    def segment_bound(self) -> int:
        """Segments that may look for an orchestrator at once, across all jobs: per slot the
        known offers state, the pipeline's depth (one computing there, the rest staged behind it)
        plus CHECKED_PER_SLOT being checked here."""
        offers = self.view.state.offers.values()
        per_slot = self.depth + CHECKED_PER_SLOT
        return per_slot * max(1, sum(max(1, o.capacity) for o in offers))

    async def wait_for_offers(self, count: int, timeout: float = 30.0) -> int:
        """Wait until the log holds `count` offers; returns how many it holds."""
        with trio.move_on_after(timeout):
            while len((await self.view.refresh()).offers) < count:
                await self.node.ingest.wait_changed()
        return len(self.view.state.offers)

    async def run_work(
        self,
        work: SegmentWork,
        outcome: SegmentOutcome,
        report: JobReport,
        prefer: bytes | None = None,
        timeout_s: float | None = None,
        journal: SegmentJournal | None = None,
        avoid: frozenset[bytes] = frozenset(),
        placed: trio.Event | None = None,
    ) -> SegmentOutcome:
        """Post, pay, send, check and retry one segment's work (never raises: errors land in
        `outcome`); `prefer` is tried first when it has a free slot, `timeout_s` bounds each
        attempt (default: the config's job timeout), orchestrators in `avoid` are not tried.
        With a `journal`, a segment verified before a restart is taken from it, and one posted
        before is not posted again. `placed` is set once the segment holds a place in the
        scheduler, or needs none any more (done, or failed before)."""
        body: k.JobPosted | None = None

        async def posting() -> k.JobPosted:  # probes the work the first time, at our price cap
            nonlocal body
            if body is None:
                cap = self.config.max_price_per_pixel
                body = dataclasses.replace(await work.prepare(), max_price_per_unit=cap.numerator,
                                           pixels_per_unit=cap.denominator)  # fmt: skip
            return body

        try:
            posted = None
            if journal is not None:
                posted = await self._resume(work, posting, outcome, journal)
                if outcome.result is not None:
                    return outcome
            selector = self.selector_for(work.capability)
            tried: set[bytes] = set(avoid)
            busy_answers = 0
            limit = timeout_s or self.config.job_timeout_s
            # a report is one job (or live session): its segments get places in its turn
            async with self.scheduler.place(id(report)):
                if placed is not None:
                    placed.set()
                deadline = trio.current_time() + limit * MAX_ATTEMPTS * 2
                for _ in range(MAX_PICKS):
                    if outcome.attempts >= MAX_ATTEMPTS or outcome.result is not None:
                        break
                    candidate = await self._pick(selector, frozenset(tried), deadline, prefer,
                                                 work.warm)  # fmt: skip
                    if candidate is None:
                        outcome.errors.append(f"no orchestrator available for {work.capability}")
                        break
                    tried.add(candidate.address)
                    try:
                        # probed once it has an orchestrator: the segments waiting for a slot
                        # do not take the cores from those being sent (a job's start)
                        posting_body = await posting()
                    except BaseException:
                        self._free(candidate.address)
                        raise
                    if posted is None or self.writer.counterparty_of(posted) != candidate.address:
                        # a job is posted in the job chain towards the orchestrator it goes to
                        posted = await self.writer.emit(posting_body, to=candidate.address)
                        if journal is not None:
                            await record(journal.record_posted, work.seq, posted.id)
                    again = await self._attempt(work, posted, candidate, outcome, report, timeout_s,
                                                journal)  # fmt: skip
                    if again:
                        tried.discard(candidate.address)
                    if again == BUSY_ANSWER:  # its slots hold jobs we do not know of: back off
                        busy_answers += 1
                        await trio.sleep(min(BUSY_BACKOFF_MAX_S, 0.25 * 2 ** min(busy_answers, 8)))
        except StoreClosed as exc:  # the node stops under it: said in one line
            log.info("segment %d not finished: %s", work.seq, exc)
            outcome.errors.append(str(exc))
        except Exception as exc:  # a segment's failure is reported, never crashes the job
            log.exception("segment %d failed", work.seq)
            outcome.errors.append(repr(exc))
        finally:
            if placed is not None:
                placed.set()
        return outcome

    async def _pick(
        self,
        selector: Selector,
        exclude: frozenset[bytes],
        deadline: float,
        prefer: bytes | None = None,
        warm: str = "",
    ) -> Candidate | None:
        """The best candidate with a free slot (`prefer` if free, else one that lists `warm`),
        waiting while all are busy."""
        while trio.current_time() < deadline:
            state = await self.view.refresh()
            options = selector.candidates(state, time.monotonic(), exclude)
            if options:
                ready = [c for c in options if warm and warm in c.offer.capabilities]
                choice = next((c for c in options if c.address == prefer), (ready or options)[0])
                selector.acquire(choice.address)
                return choice
            suspended = selector.suspended(time.monotonic())
            usable = [a for a, o in state.offers.items() if a not in exclude
                      and a not in suspended and selector.capability in o.capabilities
                      and selector.affordable(o)]  # fmt: skip
            if not usable:
                if any(not selector.affordable(o) for o in state.offers.values()):
                    log.warning("offers above max_price_per_pixel %s were left out",
                                selector.max_price)  # fmt: skip
                return None
            with trio.move_on_at(deadline):
                await self._slot_freed.wait()
        return None

    def _free(self, address: bytes) -> None:
        self.selector.release(address)
        self._slot_freed.set()
        self._slot_freed = trio.Event()

    async def _attempt(
        self,
        work: SegmentWork,
        posted: SignedEvent,
        cand: Candidate,
        outcome: SegmentOutcome,
        report: JobReport,
        timeout_s: float | None = None,
        journal: SegmentJournal | None = None,
    ) -> str:
        """One try on one orchestrator; "" when it counted as an attempt, BUSY_ANSWER when the
        orchestrator said it was busy, "again" when it may be asked again at once."""
        timeout_s = timeout_s or self.config.job_timeout_s
        orch = cand.address
        who = "0x" + orch.hex()[:8]
        assigned = busy = held = freed = quoted = False
        again = ""
        price = Fraction(0)
        sent_ev = Fraction(0)  # EV of the tickets this attempt credited to the mirror
        result_event: SignedEvent | None = None
        tickets: list[SignedTicket] = []
        started = time.monotonic()
        pixels = work.pixels
        try:
            peer = await self._dial(cand)
            self.node.note_job_peer(orch, peer)
            params = await self.quotes.quote(orch, peer)
            quoted = True
            outcome.attempts += 1
            price = params.price_per_pixel
            tickets = await self.payer.tickets(params, pixels)
            sent_ev = params.ev() * len(tickets)
            held = True
            # the assignment and its tickets go into the log with one durable append
            assigning = k.JobAssigned(posted.id, orch, price.numerator, price.denominator)
            bodies = [assigning, *(issued(t, posted.id) for t in tickets)]
            emitted = await self.writer.emit_many(bodies)
            assigned = True
            raws = [posted.raw, *(e.raw for e in emitted)]
            report.tickets_sent += len(tickets)
            report.ticket_ev_sent += sum((t.ticket.ev() for t in tickets), Fraction(0))
            with trio.fail_after(timeout_s):
                result_event, metas, blobs = await self._send(peer, work, posted.id, raws,
                                                              tickets)  # fmt: skip
            self.payer.landed(tickets)  # it answered: their surplus counts from now on
            outputs = work.outputs(metas, blobs)
            held = False
            # the orchestrator is done with it: let the next segment go there while we verify
            self._free(orch)
            freed = True
            self.mirror.credit(orch.hex(), segment_fee(pixels, price))
            self.mirror.debit(orch.hex(), segment_fee(_pixels(result_event), price))
            full, problems = await self._problems(work, orch, posted.id, result_event, outputs)
            if problems:
                raise _Rejected("; ".join(problems))
            outcome.full_check = full
            latency = time.monotonic() - started
            if journal is not None:  # durable before the verdict, so a restart can reuse it
                kept = KeptSegment(posted.id, result_event.raw, round(latency * 1000), metas,
                                   blobs, full)  # fmt: skip
                await record(journal.keep, work.seq, kept)
            await self._verdict(posted.id, orch, True, "ok", latency, result_event)
            self.selector.succeeded(orch, latency)
            outcome.orchestrator, outcome.latency_s = orch, latency
            outcome.fee_wei = segment_fee(_pixels(result_event), price)
            outcome.result = work.accept(outputs)
            log.info("segment %d done by %s in %.2f s (%s check)", work.seq, who, latency,
                     "full" if full else "cheap")  # fmt: skip
        except Refused as exc:
            outcome.errors.append(msg := f"{who} refused: {exc}")
            log.warning("segment %d: %s", work.seq, msg)
            if exc.code == EXPIRED and outcome.expired < MAX_EXPIRED:
                # the params ran out on the way (a slow hop, a fast chain): no ticket was taken,
                # nobody failed; the same orchestrator again, with fresh params, not an attempt
                # and no verdict (a job may be assigned again while an attempt is outstanding)
                self.mirror.debit(orch.hex(), sent_ev)
                outcome.expired += 1
                outcome.attempts -= 1
                return "again"
            if exc.code in (BUSY, BAD_REQUEST, EXPIRED):  # refused before taking the tickets
                self.mirror.debit(orch.hex(), sent_ev)
            elif exc.code in (BALANCE, PAYMENT, FAILED):
                # our mirror of its balance was off, or some tickets may not have been taken:
                # forget it (and the hold on it), so the next segment pays in full
                self.mirror.close(orch.hex())
                held = False
            busy = (exc.code == BUSY and not assigned) or exc.code == BALANCE
            again = BUSY_ANSWER if exc.code == BUSY and not assigned else "again" if busy else ""
            if not busy and exc.code != PAYMENT:  # our own funds are not its fault
                self.selector.failed(orch, time.monotonic())
            if assigned:
                await self._verdict(posted.id, orch, False, msg[:500], 0.0, result_event)
        except PaymentError as exc:  # our sender refused to pay under these params
            outcome.errors.append(f"{who}: cannot pay: {exc}")
            log.warning("segment %d: cannot pay %s: %s", work.seq, who, exc)
            # params that expired while we quoted (a slow machine, a fast chain) are nobody's
            # fault: ask the same orchestrator again, for fresh ones, without counting an attempt
            busy = isinstance(exc, ParamsExpired) and outcome.expired < MAX_EXPIRED
            again = "again" if busy else ""
            if busy:
                outcome.expired += 1
                outcome.attempts -= 1
            if assigned:
                await self._verdict(posted.id, orch, False, "gateway cannot pay", 0.0, None)
        except (
            _Rejected,
            P2PError,
            BaseLibp2pError,
            OSError,
            trio.TooSlowError,
            EventError,
        ) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, trio.TooSlowError):
                reason = f"no result within {timeout_s:g} s"
            msg = f"{who}: {reason}"
            outcome.errors.append(msg)
            lost = not quoted and isinstance(exc, (P2PError, BaseLibp2pError, OSError))
            if lost and outcome.redials < MAX_REDIALS:
                outcome.redials += 1
                log.info("segment %d: connection to %s lost before the quote (%s); dialling again",
                         work.seq, who, reason)  # fmt: skip
                await trio.sleep(REDIAL_BACKOFF_S * 2 ** (outcome.redials - 1))
                return "again"
            log.warning("segment %d attempt %d failed: %s", work.seq, outcome.attempts, msg)
            self.selector.failed(orch, time.monotonic())
            if assigned:
                await self._verdict(posted.id, orch, False, msg[:500],
                                    time.monotonic() - started, result_event)  # fmt: skip
        finally:
            self.payer.landed(tickets)
            if held:  # no result came back: the orchestrator charged nothing
                self.mirror.credit(orch.hex(), segment_fee(pixels, price))
            if not freed:
                self._free(orch)
        return again

    async def quote_ahead(self, capability: str) -> None:
        """Fetch a quote from the orchestrator selection would pick now for `capability`, for a
        job's first segment to use (node.gateway.quotes). Never raises: the attempt quotes for
        itself if this found nothing."""
        try:
            state = await self.view.refresh()
            options = self.selector_for(capability).candidates(state, time.monotonic(),
                                                               frozenset())  # fmt: skip
            if options:
                cand = options[0]
                await self.quotes.fetch(cand.address, lambda: self._dial(cand))
        except Exception as exc:  # busy, unreachable, refused: the first attempt quotes itself
            log.info("quote ahead for %s: %s", capability, exc)

    async def _dial(self, cand: Candidate) -> ID:
        return await self._dial_offer(cand.offer)

    async def _dial_offer(self, offer: OfferState) -> ID:
        peer = ID.from_base58(offer.peer_id)
        if not self.node.has_open_connection(peer):
            errors = []
            for addr in offer.addrs:
                try:
                    await self.node.connect(addr)
                    break
                except Exception as exc:  # unreachable address: try the next
                    errors.append(repr(exc))
            else:
                raise P2PError(f"cannot reach orchestrator: {'; '.join(errors) or 'no address'}")
        return peer

    def _stream(self, stream: object, timeout: float) -> MessageStream:
        cfg = self.node.config
        return MessageStream(stream, cfg.max_frame_bytes, timeout)  # type: ignore[arg-type]

    async def _send(
        self,
        peer: ID,
        work: SegmentWork,
        job_id: bytes,
        raws: list[bytes],
        tickets: list[SignedTicket],
    ) -> tuple[SignedEvent, list[Any], list[bytes]]:
        """Request, segment and tickets up; the signed JobResult, and the metadata and bytes of
        each output, down. Uploads to one orchestrator go one at a time, in the order they
        asked (trio's lock is fair): a job's first segment is not sent at half speed beside the
        second, which has the first one's compute to arrive in. The stream is opened once it
        is this upload's turn: the orchestrator waits a frame timeout for a request on it."""
        stream = None
        try:
            async with self._uploads.setdefault(peer, trio.Lock()):
                stream = await self.node.running.host.new_stream(peer, [work.protocol])
                ms = self._stream(stream, self.config.job_timeout_s)
                await ms.send([work.request_kind, VERSION, work.spec_wire(job_id), raws,
                               [ticket_to_wire(t) for t in tickets]])  # fmt: skip
                await ms.send_blob(work.data)
            return await read_result(self.node, ms, work.done_kind, peer)
        finally:
            if stream is not None:
                await close(stream)

    async def _problems(
        self, work: SegmentWork, orch: bytes, job_id: bytes, result: SignedEvent, outputs: Any
    ) -> tuple[bool, list[str]]:
        """Check a result as the policy says (in full, or the cheap checks): (full, problems);
        a failed check has whatever `orch` sends next checked in full."""
        full = not isinstance(work, SampledWork) or self.verify_policy.full_check(orch)
        check = work.check if full else work.check_cheap
        # the result is signed in the orchestrator's job chain: checked as what it speaks for
        speaks_for = self.node.jobs.principal_of(result.author) or result.author
        signed = dataclasses.replace(result, author=speaks_for)
        problems = await trio.to_thread.run_sync(check, signed, orch, job_id, outputs)
        if problems:
            self.verify_policy.failed(orch)
        return full, problems

    async def _verdict(
        self,
        job_id: bytes,
        orch: bytes,
        accepted: bool,
        reason: str,
        latency_s: float,
        result: SignedEvent | None,
    ) -> None:
        """Log the verdict, after the orchestrator's result when there is one (causal order)."""
        if result is not None:
            peer = self.node.jobs.peers.get(orch)
            if peer is not None:  # the orchestrator's job chain: earlier events fetched from it
                await self.node.receive_job_events([result], peer)
            with trio.move_on_after(10):
                await self.node.wait_until(
                    lambda: self.node.ingest.heads.get(result.author, 0) >= result.seq
                )
        body = k.JobVerdict(job_id, orch, accepted, reason, round(latency_s * 1000))
        self.verdicts.append(body)
        await self.writer.emit(body)


class _Rejected(Exception):
    """A result that failed verification."""


def _pixels(result: SignedEvent) -> int:
    body = k.read_body(result)
    assert isinstance(body, k.JobResult)
    return body.output_pixels
