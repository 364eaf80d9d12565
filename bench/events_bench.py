"""Event log benchmark: castnet against baselines measured in the same run.

  sign/s, verify/s            castnet (coincurve) vs eth-account signing/recovering the same ids
  durable append events/s     castnet EventStore (WAL, synchronous=FULL, 1000-event batches) vs the
                              eventsourcing library's SQLite recorder saving 1000-event batches
  replay events/s             castnet decode + fold, with and without signature verification, vs
                              eventsourcing reading its notification log back into domain events
  restart from snapshot       open a store of --events events and rebuild state (snapshot + tail)

Rounds alternate castnet and baseline; the table shows medians. Run: `make bench` or
`python bench/events_bench.py [--events 1000000] [--sample 100000] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events.envelope import decode_verified
from events.fold import fold
from node.local.synth import synth_events
from storage.replay import decode_stream, load_state
from storage.store import EventStore

BATCH = 1000


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


def castnet_append(events: list, path: Path) -> float:
    with EventStore(path) as store:
        return timed(
            lambda: [store.append(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
        )


def castnet_replay(path: Path, verify: bool) -> float:
    with EventStore(path) as store:
        return timed(lambda: fold(decode_stream(store.read(), verify)))


def eventsourcing_app(path: Path):  # type: ignore[no-untyped-def]
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = str(path)
    from eventsourcing.application import Application

    return Application()


_AGGREGATE: list[type] = []


def eventsourcing_author() -> type:
    """The baseline's aggregate, defined once (eventsourcing registers classes by topic)."""
    if not _AGGREGATE:
        from eventsourcing.domain import Aggregate, event

        class Author(Aggregate):
            def __init__(self) -> None:
                self.count = 0

            @event("Recorded")
            def record(self, kind: int, seq: int, time_ms: int, body: str) -> None:
                self.count += 1

        _AGGREGATE.append(Author)
    return _AGGREGATE[0]


def eventsourcing_append(events: list, path: Path) -> float:
    Author = eventsourcing_author()
    app = eventsourcing_app(path)

    def run() -> None:
        author = Author()
        for i, e in enumerate(events, start=1):
            author.record(e.kind, e.seq, e.time_ms, e.raw.hex())
            if i % BATCH == 0:
                app.save(author)
        app.save(author)

    return timed(run)


def eventsourcing_replay(path: Path, count: int) -> float:
    app = eventsourcing_app(path)

    def run() -> None:
        start = 1
        while True:
            notes = app.recorder.select_notifications(start=start, limit=BATCH)
            for note in notes:
                app.mapper.to_domain_event(note)
            if len(notes) < BATCH:
                return
            start = notes[-1].id + 1

    return timed(run)


def crypto_rates(events: list, rounds: int) -> dict[str, tuple[float, float]]:
    from eth_account import Account

    from events.crypto import LocalKeySigner, keccak256, recover_address

    key = keccak256(b"bench-key")
    signer = LocalKeySigner(key)
    ids = [e.id for e in events[:2000]]
    raws = [e.raw for e in events[:2000]]
    sigs = [signer.sign_hash(i) for i in ids]
    ours_sign, theirs_sign, ours_verify, theirs_verify, ours_recover = [], [], [], [], []
    for _ in range(rounds):
        ours_sign.append(timed(lambda: [signer.sign_hash(i) for i in ids]))
        theirs_sign.append(timed(lambda: [Account.unsafe_sign_hash(i, key) for i in ids]))
        ours_verify.append(timed(lambda: [decode_verified(r) for r in raws]))
        ours_recover.append(
            timed(lambda: [recover_address(i, s) for i, s in zip(ids, sigs, strict=True)])
        )
        theirs_verify.append(
            timed(
                lambda: [
                    Account._recover_hash(i, signature=s) for i, s in zip(ids, sigs, strict=True)
                ]
            )
        )
    n = len(ids)
    return {
        "sign/s (32-byte id)": (rate(n, ours_sign), rate(n, theirs_sign)),
        "recover/s (id + sig)": (rate(n, ours_recover), rate(n, theirs_verify)),
        "verify/s (decode + id + recover)": (rate(n, ours_verify), rate(n, theirs_verify)),
    }


def restart_figures(total: int, workdir: Path, rounds: int) -> dict[str, float]:
    path = workdir / f"restart-{total}.sqlite"
    tail = min(10_000, total // 10)
    if not path.exists():
        print(f"building a {total}-event store (once, kept at {path}) ...", file=sys.stderr)
        build = path.with_suffix(".building")
        build.unlink(missing_ok=True)
        with EventStore(build) as store:
            batch: list = []
            for i, e in enumerate(synth_events(total, 12, seed=42), start=1):
                batch.append(e)
                if len(batch) == 10_000:
                    store.append(batch)
                    batch = []
                if i == total - tail:
                    store.append(batch)
                    batch = []
                    state = fold(decode_stream(store.read(), verify=False))
                    store.save_snapshot(state.events, state)
            store.append(batch)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(build) + suffix)
            if src.exists():
                src.rename(str(path) + suffix)
    restarts, refolds = [], []
    for _ in range(rounds):

        def restart() -> None:
            with EventStore(path) as store:
                state = load_state(store)
                assert state.events == total

        restarts.append(timed(restart))
    with EventStore(path) as store:
        refolds.append(timed(lambda: load_state(store, use_snapshot=False)))
        snap = store.latest_snapshot()
    return {
        "restart": statistics.median(restarts),
        "refold": refolds[0],
        "tail": tail,
        "snapshot_mb": len(snap[1]) / 1e6 if snap else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="store size for restart")
    parser.add_argument("--sample", type=int, default=100_000, help="events for append/replay")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "castnet-bench"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.sample} signed events ...", file=sys.stderr)
    events = list(synth_events(args.sample, 12, seed=7))
    rows: list[tuple[str, str, str, str]] = []
    for name, (ours, theirs) in crypto_rates(events, args.rounds).items():
        rows.append((name, f"{ours:,.0f}", f"{theirs:,.0f}", "eth-account"))

    ours_append, theirs_append = [], []
    ours_replay, ours_replay_verified, theirs_replay = [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            ours, theirs = Path(tmp) / "castnet.sqlite", Path(tmp) / "es.sqlite"
            ours_append.append(castnet_append(events, ours))
            theirs_append.append(eventsourcing_append(events, theirs))
            ours_replay.append(castnet_replay(ours, verify=False))
            theirs_replay.append(eventsourcing_replay(theirs, len(events)))
            ours_replay_verified.append(castnet_replay(ours, verify=True))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    n = len(events)
    rows.append(("durable append events/s", f"{rate(n, ours_append):,.0f}",
                 f"{rate(n, theirs_append):,.0f}", "eventsourcing (SQLite)"))  # fmt: skip
    rows.append(("replay events/s, no verification", f"{rate(n, ours_replay):,.0f}",
                 f"{rate(n, theirs_replay):,.0f}", "eventsourcing (SQLite)"))  # fmt: skip
    rows.append(("replay events/s, verified sigs", f"{rate(n, ours_replay_verified):,.0f}",
                 "n/a (unsigned)", "eventsourcing (SQLite)"))  # fmt: skip
    restart = restart_figures(args.events, args.workdir, args.rounds)
    rows.append((f"restart, {args.events:,}-event store", f"{restart['restart']:.2f} s",
                 f"{restart['refold']:.2f} s", "full refold, no snapshot"))  # fmt: skip

    print(f"\nevents benchmark: {n:,} events for rates, {args.rounds} alternating rounds, medians")
    print(f"snapshot {restart['snapshot_mb']:.1f} MB + {restart['tail']:,}-event tail\n")
    print("| figure | castnet | baseline | baseline is |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
