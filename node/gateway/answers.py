"""An orchestrator's answer to a segment job, read off its stream: the signed JobResult, then
the metadata and bytes of each output (the same answer whether the job was just computed or its
result is fetched again after a restart, node.gateway.journal)."""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID

from events import kinds as k
from events.envelope import SignedEvent, decode_verified
from node.gateway.payment import raise_refused
from p2p.errors import ProtocolError
from p2p.framing import MessageStream
from p2p.node import P2PNode


async def read_result(
    node: P2PNode, ms: MessageStream, done_kind: int, peer: ID
) -> tuple[SignedEvent, list[Any], list[bytes]]:
    """The answer's signed JobResult (stored in its job chain before any check), and the
    metadata and bytes of each output, each output's hash checked against the result's."""
    reply = await ms.receive()
    raise_refused(reply)
    if reply[0] != done_kind or len(reply) != 3 or not isinstance(reply[2], list):
        raise ProtocolError("expected a job result")
    event = decode_verified(reply[1]) if type(reply[1]) is bytes else None
    body = k.read_body(event) if event is not None else None
    if event is None or not isinstance(body, k.JobResult):
        raise ProtocolError("the result is not a signed JobResult")
    await node.receive_job_events([event], peer)
    if len(reply[2]) != len(body.output_hashes):
        raise ProtocolError("output count differs from the signed result")
    limit = node.config.max_blob_bytes
    blobs = [await ms.receive_blob(limit, expected=h) for h in body.output_hashes]
    return event, reply[2], blobs
