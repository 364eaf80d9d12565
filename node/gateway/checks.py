"""What a gateway checks in an orchestrator's answer before it accepts and pays for it: the signed
result (author, job, pixel claim), the renditions against the planned ladder, and then either
every rendition decoded and measured against the source segment (the full check) or, when the
verify policy did not draw this segment (node.gateway.verify_policy), only what the containers
say without decoding: sizes, packet counts, timestamps, audio (the cheap check; media.verify)."""

from __future__ import annotations

from events import kinds as k
from events.envelope import SignedEvent
from media.profiles import Profile, plan_ladder
from media.segmenter import Segment
from media.source import SourceInfo
from media.transcoder import Rendition
from media.verify import Claim, cheap_verdicts, verify_renditions


def check_result(
    event: SignedEvent,
    orch: bytes,
    job_id: bytes,
    renditions: list[Rendition],
    seg: Segment,
    info: SourceInfo,
    ladder: tuple[Profile, ...],
    full: bool = True,
) -> list[str]:
    """Every reason to reject a result (blocking: reads, and when `full` decodes and measures,
    the renditions)."""
    problems = result_problems(event, orch, job_id, sum(r.pixel_count for r in renditions))
    planned = {s.name: (s.width, s.height) for s in plan_ladder(ladder, info.width, info.height)}
    got = {r.name: (r.width, r.height) for r in renditions}
    if got != planned:
        problems.append(f"renditions {got} differ from the ladder {planned}")
    claims = [(r.data, Claim.of(r), r.name) for r in renditions]
    verdicts = verify_renditions(claims, seg.data) if full else cheap_verdicts(claims, seg.data)
    for verdict in verdicts:
        if not verdict.ok:
            problems.append(f"{verdict.name}: {', '.join(verdict.reasons)}")
    return problems


def result_problems(result: SignedEvent, orch: bytes, job_id: bytes, pixels: int) -> list[str]:
    """What is wrong with a signed JobResult: its author, its job, its pixel claim."""
    problems = []
    body = k.read_body(result)
    assert isinstance(body, k.JobResult)
    if result.author != orch:
        problems.append("result signed by another address")
    if body.job_id != job_id:
        problems.append("result names another job")
    if body.output_pixels != pixels:
        problems.append(f"signed pixel count differs from the outputs: {body.output_pixels}, "
                        f"not {pixels}")  # fmt: skip
    return problems
