"""The chain watcher: protocol logs, once confirmed, become `ChainObserved` events in a node's log.

    config = WatchConfig(depth=6)
    watcher = ChainWatcher(chain, protocol.addresses(), role_dir / CURSOR_FILE, config)
    service = ChainWatcherService(watcher, writer.emit, interval_s=2.0)
    await nursery.start(service.run)

`ChainWatcher` is the blocking core (call it from a thread; it holds `chain.lock` around each web3
call). `poll_once()` reads the logs of blocks that have `depth` confirmations, from the block after
its cursor, with `eth_getLogs` over ranges of at most `max_range` blocks filtered by the protocol's
addresses and reported topics; it returns their bodies, in chain order, and the cursor that follows
them. Nothing changes until the caller has appended the bodies and calls `commit(cursor)`, which
writes the cursor atomically to a small JSON file (`chain-watcher.json` in the role's data dir):
the chain id, the watched addresses, the last scanned block and the hashes of the last `window`
scanned blocks. A restart reads it back and goes on from there.

Exactly once: `mark_appended(body)` says a ChainObserved is in the node's log (the service calls it
after each append; at start-up pass the node's own ChainObserved events, and pass those that other
code appends, such as a reward call's log). A poll leaves out every log whose (block hash, tx hash,
log index) was marked, so a crash between appending and committing the cursor re-emits nothing.
Marks at or below a committed cursor are forgotten: those blocks are read again only after a reorg,
and then under new hashes. (The fold also counts a (tx hash, log index) once.)

Reorgs: each poll first checks that the chain still holds the hash recorded for the last scanned
block. If not, it walks back through the recorded window to the newest block that still matches
(the fork point), logs a warning with the depth, and re-scans from the block after it. A reorg
deeper than the window raises `ReorgTooDeep` (the chain was reset, or the window is too short).
Events already appended cannot be removed from the log: a log the new chain holds again in another
block is observed again with the new block's hash, and the fold records that as a "chain-conflict"
violation; that pair of events is the audit trail of the reorg. A log the new chain does not hold
at all stays counted by the fold: the warning is the operator's cue. Confirmation depth keeps this
rare: reorgs shallower than `depth` never reach the log.

Each range is read between two reads of its last block's hash, and each log's block hash is checked
against the hashes recorded for the window; a range that changed while it was read (or logs from a
node that is still on another branch) is dropped and read again at the next poll. In a long
catch-up, blocks older than the window are checked only through their range's last block hash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chain.client import Chain
from chain.errors import ChainError
from chain.logs import LogDecoder
from events.kinds import ChainObserved

log = logging.getLogger("castnet.chain.watcher")
CURSOR_FILE = "chain-watcher.json"
CURSOR_FORMAT = 1


class WatcherError(ChainError):
    """The watcher cannot go on as configured; the message says why."""


class ReorgTooDeep(WatcherError):
    """None of the recorded recent blocks is on the chain any more."""


class CursorMismatch(WatcherError):
    """The cursor file belongs to another chain or other contracts."""


@dataclass(frozen=True, slots=True)
class WatchConfig:
    depth: int = 6  # confirmations: a block is read once `depth` blocks are on top of it
    max_range: int = 1000  # blocks per eth_getLogs call
    max_ranges_per_poll: int = 10  # a poll that is further behind returns `behind` and goes on
    window: int = 64  # recent block hashes kept for reorg detection: the deepest reorg it follows
    start_block: int = 0  # the first block to read (the deployment's block saves a long scan)

    def __post_init__(self) -> None:
        if self.depth < 0 or self.start_block < 0:
            raise WatcherError("depth and start_block must not be negative")
        if self.max_range < 1 or self.max_ranges_per_poll < 1 or self.window < 1:
            raise WatcherError("max_range, max_ranges_per_poll and window must be positive")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Every log up to `block_number` has been read; `recent` holds (number, hash) of the last
    scanned blocks, oldest first, ending at `block_number` (empty before the first block)."""

    block_number: int
    recent: tuple[tuple[int, bytes], ...] = ()

    @property
    def block_hash(self) -> bytes | None:
        return self.recent[-1][1] if self.recent else None


@dataclass(frozen=True, slots=True)
class Reorg:
    fork_block: int  # the newest recorded block still on the chain
    depth: int  # scanned blocks that left the chain


@dataclass(frozen=True, slots=True)
class Poll:
    observed: tuple[ChainObserved, ...]  # in chain order (block number, log index)
    cursor: Cursor  # to commit once `observed` is appended
    head: int  # the chain's block number when polled
    reorg: Reorg | None = None
    behind: bool = False  # more confirmed blocks wait: poll again without pausing


Scanned = tuple[list[ChainObserved], list[tuple[int, bytes]]]


class ChainWatcher:
    """Blocking; one poller at a time (the service), any thread."""

    def __init__(self, chain: Chain, addresses: Mapping[str, str], cursor_path: Path,
                 config: WatchConfig | None = None) -> None:  # fmt: skip
        self.chain = chain
        self.config = config or WatchConfig()
        self.cursor_path = Path(cursor_path)
        with chain.lock:
            self.decoder = LogDecoder(chain.w3, addresses)
        if not self.decoder.addresses:
            raise WatcherError(f"none of {sorted(addresses)} has events the watcher reports")
        self.cursor = self._load()
        self._appended: dict[tuple[bytes, bytes, int], int] = {}  # -> block number
        self._marks = threading.Lock()  # marks come from the trio thread, polls from a worker

    # -- cursor file -----------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"chain_id": int(self.chain.chain_id), "addresses": list(self.decoder.addresses)}

    def _load(self) -> Cursor:
        start = Cursor(self.config.start_block - 1)
        try:
            text = self.cursor_path.read_text()
        except FileNotFoundError:
            return start
        try:
            data = json.loads(text)
            stored = {"chain_id": data["chain_id"], "addresses": data["addresses"]}
            recent = tuple((int(n), bytes.fromhex(h)) for n, h in data["recent"])
            cursor = Cursor(int(data["block_number"]), recent)
        except (ValueError, KeyError, TypeError) as exc:
            raise WatcherError(f"cursor file {self.cursor_path} is unreadable: {exc}") from None
        if stored != self._identity():
            raise CursorMismatch(
                f"cursor file {self.cursor_path} was written for chain {stored['chain_id']} "
                f"watching {stored['addresses']}, not chain {self.chain.chain_id} watching "
                f"{list(self.decoder.addresses)}; remove it to read from block "
                f"{self.config.start_block}"
            )
        return cursor

    def commit(self, cursor: Cursor) -> None:
        """Make `cursor` the place to go on from, durably (write, fsync, rename)."""
        data = {**self._identity(), "format": CURSOR_FORMAT, "block_number": cursor.block_number,
                "recent": [[n, h.hex()] for n, h in cursor.recent]}  # fmt: skip
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.cursor_path)
        dir_fd = os.open(self.cursor_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.cursor = cursor
        with self._marks:
            for key, number in list(self._appended.items()):
                if number <= cursor.block_number:
                    del self._appended[key]

    def mark_appended(self, body: ChainObserved) -> None:
        """`body` is in the node's log: polls leave out the log it reports, in that block."""
        if body.block_number > self.cursor.block_number:
            with self._marks:
                self._appended[(body.block_hash, body.tx_hash, body.log_index)] = body.block_number

    @property
    def marks(self) -> int:
        """Marked logs above the committed cursor."""
        with self._marks:
            return len(self._appended)

    # -- chain reads -----------------------------------------------------------------------

    def _head(self) -> int:
        with self.chain.lock:
            return int(self.chain.w3.eth.block_number)

    def _hash(self, number: int) -> bytes | None:
        """The hash of block `number` on the chain now; None if there is no such block."""
        with self.chain.lock:
            try:
                return bytes(self.chain.w3.eth.get_block(number)["hash"])
            except Exception as exc:  # BlockNotFound, or a node that answers null
                if number <= int(self.chain.w3.eth.block_number):
                    raise WatcherError(f"cannot read block {number}: {exc}") from exc
                return None

    def _logs(self, first: int, last: int) -> list[Any]:
        query = {"fromBlock": first, "toBlock": last, "address": list(self.decoder.addresses),
                 "topics": [list(self.decoder.topics)]}  # fmt: skip
        with self.chain.lock:
            return list(self.chain.w3.eth.get_logs(query))  # type: ignore[arg-type]

    # -- polling ---------------------------------------------------------------------------

    def poll_once(self) -> Poll:
        """The confirmed logs after the cursor (see the module docstring); changes nothing."""
        cfg = self.config
        head = self._head()
        cursor, reorg = self._rewind(self.cursor)
        safe = head - cfg.depth
        end = min(safe, cursor.block_number + cfg.max_range * cfg.max_ranges_per_poll)
        observed: list[ChainObserved] = []
        first = cursor.block_number + 1
        while first <= end:
            last = min(end, first + cfg.max_range - 1)
            scanned = self._scan(first, last, end)
            if scanned is None:  # the chain changed under the scan: the next poll rewinds
                log.info("blocks %d..%d changed while read; reading them next poll", first, last)
                return Poll(self._unappended(observed), cursor, head, reorg)
            logs, recent = scanned
            observed += logs
            cursor = Cursor(last, (*cursor.recent, *recent)[-cfg.window :])
            first = last + 1
        return Poll(self._unappended(observed), cursor, head, reorg, behind=end < safe)

    def _scan(self, first: int, last: int, end: int) -> Scanned | None:
        """Logs of blocks first..last, and the hashes to record: block `last` and those among the
        last `window` blocks of this poll. None when the chain changed while they were read."""
        before = self._hash(last)
        raw = self._logs(first, last)
        recorded = range(max(first, end - self.config.window + 1), last)
        found = {n: self._hash(n) for n in recorded}
        if before is None or self._hash(last) != before:
            return None
        hashes = {n: h for n, h in found.items() if h is not None}
        if len(hashes) < len(found):
            return None
        hashes[last] = before
        logs = []
        for entry in raw:
            if entry.get("removed"):
                continue
            body = self.decoder.decode(entry)
            if body is None:
                continue
            if hashes.get(body.block_number, body.block_hash) != body.block_hash:
                return None
            logs.append(body)
        logs.sort(key=lambda b: (b.block_number, b.log_index))
        return logs, [(n, hashes[n]) for n in sorted(hashes)]

    def _rewind(self, cursor: Cursor) -> tuple[Cursor, Reorg | None]:
        """`cursor` if the chain still holds its last block, else the cursor at the fork point."""
        if not cursor.recent or self._hash(cursor.block_number) == cursor.block_hash:
            return cursor, None
        for i in range(len(cursor.recent) - 2, -1, -1):
            number, recorded = cursor.recent[i]
            if self._hash(number) == recorded:
                reorg = Reorg(number, cursor.block_number - number)
                log.warning(
                    "chain reorg: %d confirmed block(s) after block %d left the chain; "
                    "re-reading from block %d (logs appended from the old blocks stay in the log; "
                    "a log found again in a new block shows as a chain-conflict)",
                    reorg.depth, number, number + 1,
                )  # fmt: skip
                return Cursor(number, cursor.recent[: i + 1]), reorg
        oldest = cursor.recent[0][0]
        raise ReorgTooDeep(
            f"none of blocks {oldest}..{cursor.block_number} read before is on the chain now: "
            f"a reorg deeper than the window of {self.config.window} blocks, or the chain was "
            f"reset; remove {self.cursor_path} to read again from block {self.config.start_block}"
        )

    def _unappended(self, observed: list[ChainObserved]) -> tuple[ChainObserved, ...]:
        with self._marks:
            marked = set(self._appended)
        return tuple(b for b in observed if (b.block_hash, b.tx_hash, b.log_index) not in marked)


Emit = Callable[[ChainObserved], Awaitable[object]]


class ChainWatcherService:
    """Polls in a worker thread every `interval_s` and appends each observation with `emit` (an
    `EventWriter.emit`: signs, stores durably, gossips), then commits the cursor. A failed poll or
    append is logged and retried at the next interval; the node goes on."""

    def __init__(self, watcher: ChainWatcher, emit: Emit, interval_s: float = 2.0) -> None:
        if not interval_s > 0 or not math.isfinite(interval_s):
            raise WatcherError("interval_s must be a positive number of seconds")
        self.watcher = watcher
        self.emit = emit
        self.interval_s = interval_s
        self.emitted = 0  # bodies appended since start
        self.reorgs: list[Reorg] = []
        self.failures = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_error = ""
        while True:
            try:
                poll = await self.poll()
            except WatcherError as exc:  # needs the operator (see the message): say it once
                self.failures += 1
                if str(exc) != last_error:
                    log.error("chain watcher cannot go on: %s", exc)
                last_error = str(exc)
            except Exception:  # an unreachable chain or a refused append: try again later
                self.failures += 1
                log.exception("chain watcher poll failed")
            else:
                last_error = ""
                if poll.behind:
                    await trio.lowlevel.checkpoint()
                    continue
            await trio.sleep(self.interval_s)

    async def poll(self) -> Poll:
        """One pass: read the confirmed logs, append them in order, commit the cursor."""
        poll = await trio.to_thread.run_sync(self.watcher.poll_once)
        if poll.reorg is not None:
            self.reorgs.append(poll.reorg)
        for body in poll.observed:
            await self.emit(body)
            self.watcher.mark_appended(body)
            self.emitted += 1
        await trio.to_thread.run_sync(self.watcher.commit, poll.cursor)
        return poll
