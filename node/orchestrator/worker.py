"""A remote worker: its own libp2p identity (`DATA_DIR/p2p.key`), attached to one orchestrator
over `/castnet/worker/1` (see workers), transcoding the segments it pushes in a thread.
It redials with backoff when the orchestrator goes away and stops when cancelled; a refusal
because it is not allowed is final (`WorkerRefused`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.network.stream.net_stream import INetStream

from events.crypto import keccak256
from media.encoders import X264_PRESETS
from media.errors import MediaError
from media.profiles import parse_profiles
from media.transcoder import TranscodeResult, transcode
from node.orchestrator.workers import (
    ACCEPTED,
    HEARTBEAT,
    NOT_ALLOWED,
    REGISTER,
    TASK,
    TASK_DONE,
    TASK_PROTOCOL,
    WORKER_BAD_TASK,
    WORKER_BUSY,
    WORKER_FAILED,
    WORKER_PROTOCOL,
    WORKER_VERSION,
    source_facts,
)
from node.protocol import REFUSED, Refused, rendition_meta
from p2p.config import P2PConfig
from p2p.errors import P2PError, ProtocolError, StreamClosed, StreamTimeout
from p2p.framing import MessageStream
from p2p.host import RunningHost, running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.peers import parse_peer_addr

log = logging.getLogger("castnet.worker")
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class WorkerRefused(Exception):
    """The orchestrator will not take this worker (not listed); retrying cannot help."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    orchestrator: str  # multiaddr with /p2p/<peer id>
    data_dir: Path
    capacity: int = 1
    encoder: str = "software"  # "software", "auto" (NVENC when it opens) or an encoder name
    capabilities: tuple[str, ...] = ()
    p2p: P2PConfig = field(default_factory=P2PConfig)


@dataclass(slots=True)
class WorkerStats:
    registrations: int = 0
    segments: int = 0
    refused: int = 0
    failed: int = 0


class Worker:
    """Start with `await nursery.start(worker.run)`; `on_line` gets progress lines. `run`
    returns only when the orchestrator refuses this worker for good (`refusal` says why)."""

    def __init__(self, config: WorkerConfig, on_line: Callable[[str], None] = print) -> None:
        if config.capacity < 1:
            raise ValueError("worker capacity must be >= 1")
        self.config = config
        self.target = parse_peer_addr(config.orchestrator)  # refuses a bad multiaddr early
        self.key_pair = load_or_create_identity(config.data_dir)
        self.peer_id = peer_id_of(self.key_pair).to_base58()
        self.stats = WorkerStats()
        self.active = 0
        self.registered = trio.Event()
        self.refusal: str | None = None  # set when the orchestrator will not take this worker
        self._say = on_line
        self._running: RunningHost

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with running_host(self.key_pair, self.config.p2p, frozenset(), self._wire) as rh:
            self._running = rh
            task_status.started(self)
            try:
                await self._attach_forever()
            except WorkerRefused as exc:
                self.refusal = str(exc)
                self._say(f"refused by the orchestrator: {exc}")

    def addrs(self) -> list[str]:
        return self._running.addrs()

    def _wire(self, running: RunningHost) -> None:
        running.host.set_stream_handler(TASK_PROTOCOL, self._handle_task)

    # -- attachment ------------------------------------------------------------------------

    async def _attach_forever(self) -> None:
        failures = 0
        orch = self.target.peer_id.to_base58()
        while True:
            try:
                await self._attach()
                failures = 0  # it was attached, then lost: start the backoff over
                reason = "connection closed"
            except WorkerRefused:
                raise
            except (P2PError, OSError, trio.TooSlowError, Exception) as exc:
                reason = str(exc) or repr(exc)
            self.registered = trio.Event()
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            failures += 1
            self._say(f"orchestrator {orch} unreachable ({reason}); retrying in {delay:g} s")
            await trio.sleep(delay)

    async def _attach(self) -> None:
        """Dial, register, then exchange heartbeats until the stream breaks."""
        host = self._running.host
        cfg = self.config.p2p
        # py-libp2p refuses for 60 s to redial a peer whose addresses all failed once (its
        # "negative cache"); our own backoff decides when to try again
        unblock = getattr(host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(self.target.peer_id)
        with trio.fail_after(cfg.dial_timeout_s):
            await host.connect(self.target)
            stream = await host.new_stream(self.target.peer_id, [WORKER_PROTOCOL])
        try:
            ms = MessageStream(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)
            caps = list(self.config.capabilities)
            await ms.send([REGISTER, WORKER_VERSION, caps, self.config.capacity])
            reply = await ms.receive()
            if reply[0] == REFUSED and len(reply) == 3:
                if reply[1] == NOT_ALLOWED:
                    raise WorkerRefused(str(reply[2]))
                raise ProtocolError(f"registration refused: {reply[1]}: {reply[2]}")
            if reply[0] != ACCEPTED or len(reply) != 2 or not isinstance(reply[1], int | float):
                raise ProtocolError("expected [ACCEPTED, heartbeat_s]")
            interval = min(max(float(reply[1]), 0.2), 30.0)
            self.stats.registrations += 1
            self._say(
                f"registered with orchestrator {self.target.peer_id.to_base58()} "
                f"(capabilities {', '.join(caps)}; capacity {self.config.capacity})"
            )
            self.registered.set()
            while True:
                await trio.sleep(interval)
                await ms.send([HEARTBEAT, self.active])
                if (await ms.receive())[0] != HEARTBEAT:
                    raise ProtocolError("expected a heartbeat answer")
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    # -- tasks -----------------------------------------------------------------------------

    async def _handle_task(self, stream: INetStream) -> None:
        cfg = self.config.p2p
        ms = MessageStream(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)
        taken = False
        try:
            fields = await ms.receive()
            if fields[0] != TASK or len(fields) != 4 or fields[1] != WORKER_VERSION:
                raise Refused(WORKER_BAD_TASK, f"expected [TASK, {WORKER_VERSION}, profiles, "
                              "preset]")  # fmt: skip
            segment = await ms.receive_blob(cfg.max_blob_bytes)
            profiles, preset = fields[2], fields[3]
            if type(profiles) is not str or len(profiles) > 512 or preset not in X264_PRESETS:
                raise Refused(WORKER_BAD_TASK, "profiles must be a short string and preset "
                              f"one of {', '.join(X264_PRESETS)}")  # fmt: skip
            try:
                ladder = parse_profiles(profiles)
            except MediaError as exc:
                raise Refused(WORKER_BAD_TASK, f"bad profiles {profiles!r}: {exc}") from None
            if self.active >= self.config.capacity:
                raise Refused(WORKER_BUSY, f"all {self.config.capacity} slots are in use")
            self.active += 1
            taken = True
            tag = keccak256(segment).hex()[:12]
            self._say(f"segment {tag} start ({len(segment)} bytes, {profiles})")
            started = time.perf_counter()
            try:
                result: TranscodeResult = await trio.to_thread.run_sync(
                    lambda: transcode(segment, ladder, preset=preset, encoder=self.config.encoder)
                )
            except MediaError as exc:
                raise Refused(WORKER_FAILED, f"transcode failed: {exc}") from None
            await ms.send([TASK_DONE, [rendition_meta(r) for r in result.renditions],
                           source_facts(result)])  # fmt: skip
            for rendition in result.renditions:
                await ms.send_blob(rendition.data)
            self.stats.segments += 1
            ms_taken = round((time.perf_counter() - started) * 1000)
            self._say(
                f"segment {tag} done: {len(result.renditions)} renditions, "
                f"{sum(r.pixel_count for r in result.renditions)} pixels, {ms_taken} ms"
            )
        except Refused as exc:
            self.stats.refused += 1
            log.warning("task refused: %s", exc)
            self._say(f"task refused: {exc}")
            with contextlib.suppress(P2PError):
                await ms.send([REFUSED, exc.code, exc.reason[:2000]])
        except (StreamClosed, StreamTimeout) as exc:
            self.stats.failed += 1
            log.warning("task stream broke: %s", exc)
        except ProtocolError as exc:  # malformed message, bad blob: answer, if it still listens
            self.stats.refused += 1
            self._say(f"task refused: {WORKER_BAD_TASK}: {exc}")
            with contextlib.suppress(P2PError):
                await ms.send([REFUSED, WORKER_BAD_TASK, str(exc)[:2000]])
        except Exception:  # a bug must not take the worker down; the orchestrator falls back
            self.stats.failed += 1
            log.exception("task failed unexpectedly")
        finally:
            if taken:
                self.active -= 1
            with contextlib.suppress(Exception):
                await stream.close()
