"""Audit a data directory or `.castlog` file: `events.audit` over what `storage` reads, with a
framing error reported as the last problem rather than ending the audit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from events.audit import AuditReport, Problem, audit
from node.progress import counted
from storage.errors import CastlogError
from storage.sources import open_log


def audit_path(path: str | Path, *, verify: bool = True) -> AuditReport:
    """Raises StorageError only when `path` cannot be opened as a log at all."""
    unreadable: list[Problem] = []

    def guarded(rows: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        try:
            yield from counted(rows, "audit")
        except CastlogError as exc:
            unreadable.append(Problem(exc.position, "unreadable", str(exc)))

    with open_log(path) as source:
        report = audit(guarded(source.rows), source.evidence, verify=verify)
    if unreadable:
        report = dataclasses.replace(report, problems=(*report.problems, *unreadable))
    return report
