"""An orchestrator claims its inflation reward once per round: a loop that watches the round and
calls `reward()` on the bonding contract when a new one starts, recording the Reward log in the
node's event log (so its delegators' earnings are auditable)."""

from __future__ import annotations

import logging

import trio

from events import kinds as k
from node.amounts import readable
from node.ledger import Ledger
from node.writer import EventWriter

log = logging.getLogger("castnet.rewards")


class RewardCaller:
    """Blocking ledger calls run in threads; a failed call is logged and retried next poll."""

    def __init__(self, ledger: Ledger, writer: EventWriter, poll_s: float = 2.0) -> None:
        self.ledger = ledger
        self.writer = writer
        self.poll_s = poll_s
        self.rewarded_rounds: list[int] = []
        self.minted = 0
        self.errors = 0  # failed reward calls (each retried at the next poll)
        self._last_round = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.claim_once()
            await trio.sleep(self.poll_s)

    async def claim_once(self) -> int:
        """Call reward if the round turned since the last claim; the wei minted (0 if none)."""
        try:
            view = await trio.to_thread.run_sync(self.ledger.view)
            if view.round <= self._last_round:
                return 0
            result = await trio.to_thread.run_sync(self.ledger.reward, self.writer.address)
        except Exception as exc:  # the chain may be briefly unreachable: try again next poll
            self.errors += 1
            log.warning("reward call failed: %s", exc)
            return 0
        self._last_round = view.round
        if result is None:
            return 0
        at, amount = result
        where = (at.block_number, at.block_hash, at.tx_hash, at.log_index)
        await self.writer.emit(k.ChainObserved("reward", *where, (self.writer.address, amount)))
        self.rewarded_rounds.append(view.round)
        self.minted += amount
        log.info("round %d: reward of %s minted", view.round, readable(amount))
        return amount
