"""A per-step trace of the gateway's and the orchestrator's work on one job, for
bench/e2e_bench.py --trace: the bench wraps the steps' methods (nothing in the product changes)
and records each step's start and end per segment, from the job's start.

Steps, in the order a segment meets them:

    gateway       segmented (the segmenter yielded it), prepare (probe), attempt (the slot is
                  picked), dial, quote, tickets, append (assignment + tickets, one durable
                  append), send (request + segment up ... renditions down), check (cheap or
                  full, in a thread), verdict, write (HLS, in order)
    orchestrator  intake (the gateway's events stored), probe, charge (tickets taken), claim,
                  staged (waiting for the compute slot), compute (the ladder), settle (signed
                  result), serve (the whole request, blobs sent)

`Trace.table()` gives the median of each step's duration over the segments and, for segment 0
(what the job's start waits for), when each step starts and ends."""

from __future__ import annotations

import contextvars
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import node.gateway.role as gateway_role
import node.orchestrator.role as orch_role
from media.hls import VodOutput
from node.gateway.market import SegmentMarket
from node.gateway.payment import Payer
from node.orchestrator.role import Orchestrator
from node.protocol import JobSpec

_seq: contextvars.ContextVar[int | None] = contextvars.ContextVar("trace_seq", default=None)
STEPS = ("segmented", "prepare", "attempt", "dial", "quote", "tickets", "append", "send",
         "o.intake", "o.probe", "o.charge", "o.claim", "o.staged", "o.compute", "o.settle",
         "o.serve", "check", "verdict", "write")  # fmt: skip


@dataclass(slots=True)
class Trace:
    t0: float = 0.0
    wall: float = 0.0
    spans: list[tuple[str, int, float, float]] = field(default_factory=list)
    jobs: dict[bytes, int] = field(default_factory=dict)  # job id -> segment seq
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _undo: list[tuple[Any, str, Any]] = field(default_factory=list)

    def add(self, step: str, seq: int | None, start: float, end: float) -> None:
        if seq is not None:
            with self._lock:
                self.spans.append((step, seq, start - self.t0, end - self.t0))

    # -- wrapping ----------------------------------------------------------------------------

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, make(original))

    def _async(self, owner: Any, name: str, step: str, key: Callable[..., int | None]) -> None:
        trace = self

        def make(original: Any) -> Any:
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                seq = key(*args, **kwargs)
                token = _seq.set(seq) if seq is not None else None
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    trace.add(step, seq if seq is not None else _seq.get(), start,
                              time.perf_counter())  # fmt: skip
                    if token is not None:
                        _seq.reset(token)

            return wrapped

        self._patch(owner, name, make)

    def _sync(self, owner: Any, name: str, step: str, key: Callable[..., int | None]) -> None:
        trace = self

        def make(original: Any) -> Any:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                seq = key(*args, **kwargs)
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    trace.add(step, seq if seq is not None else _seq.get(), start,
                              time.perf_counter())  # fmt: skip

            return wrapped

        self._patch(owner, name, make)

    def install(self) -> Trace:
        """Wrap the steps (undo with `remove`)."""
        trace = self
        none = lambda *a, **k: None  # noqa: E731 - the task's segment, from the context

        def job_start(original: Any) -> Any:
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                trace.t0 = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    trace.wall = time.perf_counter() - trace.t0

            return wrapped

        def segmenter(original: Any) -> Any:
            def wrapped(*args: Any, **kwargs: Any) -> Iterator[Any]:
                last = time.perf_counter()
                for seg in original(*args, **kwargs):
                    now = time.perf_counter()
                    trace.add("segmented", seg.seq, last, now)
                    last = now
                    yield seg

            return wrapped

        def attempt_key(market: Any, work: Any, posted: Any, *rest: Any, **kw: Any) -> int:
            trace.jobs[posted.id] = work.seq
            return work.seq

        def job_key(orch: Any, spec_wire: Any, *rest: Any) -> int | None:
            try:
                return trace.jobs.get(JobSpec.from_wire(spec_wire).job_id)
            except Exception:  # a malformed spec: the role answers it
                return None

        self._patch(gateway_role.Gateway, "transcode_file", job_start)
        self._patch(gateway_role, "segment", segmenter)
        self._async(gateway_role._Transcode, "prepare", "prepare", lambda w: w.seq)
        self._async(SegmentMarket, "_attempt", "attempt", attempt_key)
        self._async(SegmentMarket, "_dial", "dial", none)
        self._async(Payer, "quote", "quote", none)
        self._async(Payer, "tickets", "tickets", none)
        self._async(SegmentMarket, "_send", "send", none)
        self._async(SegmentMarket, "_verdict", "verdict", none)
        self._sync(gateway_role._Transcode, "check", "check", lambda w, *a: w.seq)
        self._sync(gateway_role._Transcode, "check_cheap", "check", lambda w, *a: w.seq)
        self._sync(VodOutput, "add", "write", lambda out, seq, *a: seq)
        self._async(Orchestrator, "_run_job", "o.job", job_key)
        self._async(Orchestrator, "_ingest_gateway_events", "o.intake", none)
        self._sync(orch_role, "probe", "o.probe", none)
        self._async(Orchestrator, "_charge_ahead", "o.charge", none)
        self._async(Orchestrator, "_claim", "o.claim", none)
        self._async(Orchestrator, "_compute", "o.compute", none)
        self._async(Orchestrator, "_settle", "o.settle", none)
        return self

    def remove(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    # -- reading -----------------------------------------------------------------------------

    def steps(self) -> dict[str, dict[int, tuple[float, float]]]:
        """step -> seq -> (start, end) of its last span (a retried segment's last try)."""
        out: dict[str, dict[int, tuple[float, float]]] = {}
        for step, seq, start, end in self.spans:
            out.setdefault(step, {})[seq] = (start, end)
        claims, computes = out.get("o.claim", {}), out.get("o.compute", {})
        out["o.staged"] = {s: (claims[s][1], computes[s][0]) for s in computes if s in claims}
        jobs = out.pop("o.job", {})
        sends = out.get("send", {})  # the orchestrator's request ends when the gateway has all
        out["o.serve"] = {s: (jobs[s][0], sends[s][1]) for s in jobs if s in sends}
        return out

    def table(self) -> dict[str, Any]:
        """`steps`: one row per step, the median duration over segments and segment 0's start
        and end; `compute`: where the job's wall time went around the orchestrator's compute
        (the start-up before the first segment's compute, the compute itself, the orchestrator
        idle between computes, the tail after the last one)."""
        rows = []
        steps = self.steps()
        for step in STEPS:
            spans = steps.get(step)
            if not spans:
                continue
            first = spans.get(0)
            rows.append({
                "step": step,
                "median_s": round(statistics.median(e - s for s, e in spans.values()), 3),
                "seg0_start_s": round(first[0], 3) if first else None,
                "seg0_end_s": round(first[1], 3) if first else None,
            })  # fmt: skip
        computes = sorted(steps.get("o.compute", {}).values())
        compute: dict[str, Any] = {"wall_s": round(self.wall, 3)}
        if computes:
            busy = sum(e - s for s, e in computes)
            compute.update({
                "start_up_s": round(computes[0][0], 3),
                "compute_s": round(busy, 3),
                "idle_between_s": round(computes[-1][1] - computes[0][0] - busy, 3),
                "tail_s": round(self.wall - computes[-1][1], 3),
            })  # fmt: skip
        return {"steps": rows, "compute": compute}


def print_table(label: str, table: dict[str, Any]) -> None:
    print(f"per-step trace, {label} (s from the job's start; median over segments)")
    print(f"{'step':12} {'median':>8} {'seg 0 start':>12} {'seg 0 end':>10}")
    for row in table["steps"]:
        start = "" if row["seg0_start_s"] is None else f"{row['seg0_start_s']:.3f}"
        end = "" if row["seg0_end_s"] is None else f"{row['seg0_end_s']:.3f}"
        print(f"{row['step']:12} {row['median_s']:8.3f} {start:>12} {end:>10}")
    c = table["compute"]
    if "compute_s" in c:
        print(
            f"wall {c['wall_s']:.3f} s = start-up {c['start_up_s']:.3f} (to the first "
            f"compute) + compute {c['compute_s']:.3f} + orchestrator idle between computes "
            f"{c['idle_between_s']:.3f} + tail {c['tail_s']:.3f} (after the last compute)"
        )
