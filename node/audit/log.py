"""Audit a data directory or `.castlog` file: `events.audit` over what `storage` reads, with a
framing error reported as the last problem rather than ending the audit, and a version-2 file's
signed trailer checked for missing, extra or altered events."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from events.audit import AuditReport, Problem, audit
from node.progress import counted
from storage.castlog import Trailer
from storage.errors import CastlogError
from storage.sources import open_log
from storage.store import PeerHeads


@dataclass(frozen=True, slots=True)
class Completeness:
    """What could be said about missing events: a castlog's version and trailer, or a store."""

    kind: str  # "store", "castlog-v1" or "castlog-v2"
    trailer: Trailer | None = None
    warning: str = ""
    peers: tuple[PeerHeads, ...] = ()  # a store: compared with the heads each peer announced


def audit_source(
    path: str | Path, *, verify: bool = True, signer: bytes | None = None
) -> tuple[AuditReport, Completeness]:
    """Raises StorageError only when `path` cannot be opened as a log at all. `signer` requires a
    version-2 file's trailer to be signed by that address."""
    unreadable: list[Problem] = []

    def guarded(rows: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        try:
            yield from counted(rows, "audit")
        except CastlogError as exc:
            unreadable.append(Problem(exc.position, "unreadable", str(exc)))

    with open_log(path) as source:
        report = audit(guarded(source.rows), source.evidence, verify=verify)
        castlog, peers = source.castlog, tuple(source.peers or ())
    extra = list(unreadable)
    if castlog is None:
        completeness = Completeness("store", peers=peers)
    elif castlog.version == 1:
        completeness = Completeness(
            "castlog-v1",
            warning=f"{path} is a version-1 castlog without a trailer: whether events are"
            " missing cannot be checked",
        )
    else:
        completeness = Completeness("castlog-v2", castlog.trailer)
        extra += [Problem(0, rule, detail) for rule, detail in castlog.completeness(signer=signer)]
    if extra:
        report = dataclasses.replace(report, problems=(*report.problems, *extra))
    return report, completeness


def audit_path(path: str | Path, *, verify: bool = True) -> AuditReport:
    """Raises StorageError only when `path` cannot be opened as a log at all."""
    return audit_source(path, verify=verify)[0]
