"""`castnet log synth|import|export|show`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events import kinds as k
from events.crypto import LocalKeySigner, keccak256, parse_address, to_checksum
from events.envelope import decode, decode_verified
from events.errors import EventError
from node.cli.commands import command_help
from node.jsonview import event_view
from node.progress import counted
from storage.castlog import Castlog, Resume, write_castlog
from storage.errors import StorageError
from storage.sources import open_log
from storage.store import EventStore, Outcome

log = logging.getLogger("castnet.log")
IMPORT_BATCH = 2048
IMPORT_PROGRESS = "import-progress.json"
PROGRESS_HEAD_BYTES = 64 * 1024


def register(sub: Any) -> None:
    group = sub.add_parser("log", help=command_help("log"))
    cmds = group.add_subparsers(dest="log_command", required=True, metavar="ACTION")

    p = cmds.add_parser("synth", help="write a realistic signed history to a .castlog file")
    p.add_argument("-o", "--out", required=True, type=Path, help="output .castlog file")
    p.add_argument("--events", type=int, required=True, help="number of events")
    p.add_argument("--authors", type=int, default=6, help="number of authors (>= 2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_synth)

    p = cmds.add_parser("import", help="verify a .castlog and append it to a data dir")
    p.add_argument("file", type=Path)
    p.add_argument("data_dir", type=Path)
    p.add_argument(
        "--signer", metavar="ADDRESS", help="require a version-2 trailer signed by this address"
    )
    p.set_defaults(run=cmd_import)

    p = cmds.add_parser(
        "export",
        help="write a data dir's log to a signed .castlog file",
        description="Write every event of a data dir, in log order, to a version-2 .castlog whose"
        " trailer (event count, running hash, every author's last event) is signed by the node's"
        " own event key: DATA_DIR/keystore.json, or --keystore FILE. The keystore password comes"
        " from --password-file, else $CASTNET_PASSWORD, else a prompt.",
    )
    p.add_argument("data_dir", type=Path)
    p.add_argument("-o", "--out", required=True, type=Path)
    p.add_argument("--keystore", type=Path, help="sign with this keystore instead")
    p.add_argument("--password-file", type=Path, help="file holding the keystore password")
    p.add_argument(
        "--v1", action="store_true", help="write an unsigned version-1 file (no trailer)"
    )
    p.set_defaults(run=cmd_export)

    p = cmds.add_parser("show", help="print the events of a data dir or .castlog")
    p.add_argument("source", type=Path, help="DATA_DIR or FILE")
    p.add_argument("--kind", help="only events of this kind (e.g. Offer, JobPosted)")
    p.add_argument("--author", help="only events by this 0x address")
    p.add_argument("--limit", type=int, default=0, help="at most this many events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_show)


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return 2


def cmd_synth(args: argparse.Namespace) -> int:
    from node.local.synth import synth_events, synth_keys  # payments, key generation: only here

    if args.events < 0:
        return _fail("--events must be >= 0")
    if args.authors < 2:
        return _fail("--authors must be >= 2 (a gateway and an orchestrator)")
    events = counted(synth_events(args.events, args.authors, args.seed), "synth", args.events)
    signer = LocalKeySigner(synth_keys(args.authors, args.seed)[0])  # the first gateway
    count = write_castlog(args.out, (e.raw for e in events), signer)
    print(
        f"wrote {count} events by {args.authors} authors to {args.out},"
        f" signed by {to_checksum(signer.address)}"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    tally = {outcome: 0 for outcome in Outcome}
    try:
        signer = parse_address(args.signer) if args.signer else None
    except ValueError as exc:
        return _fail(str(exc))
    try:
        castlog = Castlog(args.file)
        with EventStore.open_dir(args.data_dir) as store:
            progress = ImportProgress(args.data_dir / IMPORT_PROGRESS, args.file)
            resumed = progress.load()
            if resumed is not None:
                castlog.resume = resumed.resume
                print(
                    f"resuming after event {resumed.resume.position} (imported and verified by"
                    " an earlier, interrupted import)"
                )
            invalid = resumed.invalid if resumed is not None else 0
            earlier = resumed.tally if resumed is not None else {}
            batch: list[tuple[int, Any]] = []
            for position, raw in counted(castlog.rows(), "import"):
                try:
                    batch.append((position, decode_verified(raw)))
                except EventError as exc:
                    invalid += 1
                    print(f"event {position}: rejected: {exc}", file=sys.stderr)
                if len(batch) >= IMPORT_BATCH:
                    _append(store, batch, tally)
                    batch = []
                    progress.save(castlog.state, _merged(earlier, tally), invalid)
            _append(store, batch, tally)
            incomplete = _import_completeness(castlog, store, resumed is None, signer)
            progress.clear()
    except StorageError as exc:
        return _fail(str(exc))
    if castlog.version == 1:
        print(
            f"castnet: warning: {args.file} is a version-1 castlog without a trailer: whether"
            " events are missing cannot be checked",
            file=sys.stderr,
        )
    for rule, detail in incomplete:
        print(f"castnet: {args.file}: {rule}: {detail}", file=sys.stderr)
    total = _merged(earlier, tally)  # with what the interrupted import did, if resumed
    refused = total[Outcome.GAP.value] + total[Outcome.BROKEN_CHAIN.value]
    print(
        f"imported {tally[Outcome.APPENDED]} events into {args.data_dir}"
        f" ({tally[Outcome.DUPLICATE]} already present, {total['equivocation']} kept as"
        f" equivocation evidence, {refused} refused for broken chains, {invalid} invalid)"
    )
    return 1 if refused or invalid or incomplete else 0


def _merged(earlier: dict[str, int], tally: dict[Outcome, int]) -> dict[str, int]:
    return {o.value: earlier.get(o.value, 0) + n for o, n in tally.items()}


def _import_completeness(
    castlog: Castlog, store: EventStore, from_start: bool, signer: bytes | None
) -> list[tuple[str, str]]:
    """The trailer's findings; a resumed read saw only part of the file, so the trailer's heads
    are checked against the store instead: every author's last event must now be stored."""
    found = castlog.completeness(check_heads=from_start, signer=signer)
    trailer = castlog.trailer
    if trailer is not None and not from_start:
        for author, (seq, eid) in sorted(trailer.heads.items()):
            if store.get(eid) is None:
                found.append((
                    "castlog-head",
                    f"author 0x{author.hex()}: the trailer's last event seq {seq}"
                    f" (id {eid.hex()}) is not in the store",
                ))  # fmt: skip
    return found


@dataclass(frozen=True, slots=True)
class Resumed:
    resume: Resume
    tally: dict[str, int]
    invalid: int


class ImportProgress:
    """Where an import of one file stopped, saved in the data dir after each durable batch, so a
    restarted import of the same, unchanged file goes on from there instead of from event 1."""

    def __init__(self, path: Path, source: Path) -> None:
        self.path = path
        self.source = source

    def _identity(self) -> dict[str, Any]:
        stat = self.source.stat()
        with open(self.source, "rb") as handle:
            head = keccak256(handle.read(PROGRESS_HEAD_BYTES)).hex()
        return {
            "file": str(self.source.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "head": head,
        }

    def load(self) -> Resumed | None:
        try:
            saved = json.loads(self.path.read_text())
            if saved.get("identity") != self._identity():
                return None  # another file, or this one changed: start from event 1
            resume = Resume(int(saved["offset"]), int(saved["position"]),
                            bytes.fromhex(saved["running"]))  # fmt: skip
            tally = {str(k): int(v) for k, v in saved["tally"].items()}
            return Resumed(resume, tally, int(saved["invalid"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable import progress %s: %s", self.path, exc)
            return None

    def save(self, at: Resume, tally: dict[str, int], invalid: int) -> None:
        document = {
            "identity": self._identity(),
            "offset": at.offset,
            "position": at.position,
            "running": at.running.hex(),
            "tally": tally,
            "invalid": invalid,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(document, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _append(store: EventStore, batch: list[tuple[int, Any]], tally: dict[Outcome, int]) -> None:
    if not batch:
        return
    results = store.append([event for _, event in batch])
    for (position, event), result in zip(batch, results, strict=True):
        tally[result.outcome] += 1
        if result.outcome in (Outcome.GAP, Outcome.BROKEN_CHAIN):
            print(
                f"event {position}: refused ({result.outcome.value}): author 0x{event.author.hex()}"
                f" seq {event.seq}",
                file=sys.stderr,
            )
        elif result.outcome is Outcome.EQUIVOCATION:
            print(
                f"event {position}: equivocation: author 0x{event.author.hex()} seq {event.seq}:"
                f" {result.other_id.hex()} and {event.id.hex()}",
                file=sys.stderr,
            )


def cmd_export(args: argparse.Namespace) -> int:
    from node.config import KEYSTORE_NAME  # the keystore and its eth-account: only here
    from node.keystore import KeystoreError, load_keystore, resolve_password

    signer = None
    if not args.v1:
        keystore = args.keystore or args.data_dir / KEYSTORE_NAME
        if not keystore.exists():
            return _fail(
                f"no key to sign the export with: {keystore} does not exist; pass --keystore FILE"
                " (the node's own event key), or --v1 for an unsigned file"
            )
        try:
            password = resolve_password(args.password_file, os.environ)
            signer = LocalKeySigner(load_keystore(keystore, password))
        except KeystoreError as exc:
            return _fail(str(exc))
    try:
        with open_log(args.data_dir) as source:
            if source.castlog is not None:
                return _fail(f"{args.data_dir} is not a data directory")
            count = write_castlog(args.out, (raw for _, raw in source.rows), signer)
    except StorageError as exc:
        return _fail(str(exc))
    if signer is None:
        print(f"exported {count} events to {args.out} (version 1, unsigned)")
    else:
        print(f"exported {count} events to {args.out}, signed by {to_checksum(signer.address)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    kind = None
    if args.kind:
        matches = [c for name, c in k.KIND_BY_NAME.items() if name.lower() == args.kind.lower()]
        if not matches:
            return _fail(f"unknown kind {args.kind!r}; kinds: {', '.join(k.KIND_BY_NAME)}")
        kind = matches[0].KIND
    try:
        author = parse_address(args.author) if args.author else None
    except ValueError as exc:
        return _fail(str(exc))
    shown = 0
    try:
        with open_log(args.source) as source:
            for position, raw in source.rows:
                try:
                    event = decode(raw)
                except EventError as exc:
                    print(f"event {position}: undecodable: {exc}", file=sys.stderr)
                    continue
                if (kind is not None and event.kind != kind) or (author and event.author != author):
                    continue
                view = event_view(event, position)
                if args.json:
                    print(json.dumps(view))
                else:
                    print(_line(view))
                shown += 1
                if args.limit and shown >= args.limit:
                    break
    except StorageError as exc:
        return _fail(str(exc))
    return 0


def _line(view: dict[str, Any]) -> str:
    body = view["body"]
    fields = (
        ", ".join(f"{key}={_short(v)}" for key, v in body.items())
        if isinstance(body, dict)
        else _short(body)
    )
    return (
        f"{view['position']:>8} {view['kind']:<15} {view['author'][:10]}… #{view['seq']:<6}"
        f" {view['id'][:12]}… {fields}"
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "…"
