"""The chain watcher on the embedded EVM: a scripted protocol history (bonds, delegation, rewards,
unbond/rebond, deposits, reserves, real redeemed tickets, rounds, unlock/withdraw) becomes
ChainObserved events that fold into the stake and funds the contracts report; confirmation depth
holds recent blocks back; a restart goes on without duplicates; reorgs are found and re-read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.watcher import (
    ChainWatcher,
    ChainWatcherService,
    CursorMismatch,
    Poll,
    ReorgTooDeep,
    WatchConfig,
)
from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import SignedEvent, decode
from events.fold import delegated_stake, fold
from events.state import Delegation, Funds, State
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket
from storage.service import StoreService
from storage.store import EventStore, Outcome
from tests.conftest import reverted

ROUND = 20
TOKEN = 10**18
FACE = 10**16
KEYS = {name: keccak256(b"watcher-test/" + name.encode())
        for name in ("o1", "o2", "d", "sender", "sender2", "observer")}  # fmt: skip


def addr(name: str) -> bytes:
    return LocalKeySigner(KEYS[name]).address


@pytest.fixture(scope="module")
def deployed() -> tuple[Chain, Protocol]:
    """The contracts on an embedded EVM, deployed once for the module, every key funded."""
    chain = Chain.embedded()
    params = ProtocolParams(round_length=ROUND, unbonding_period_rounds=2, max_active=2,
                            inflation_ppb=2_000_000, genesis_supply=10**6 * TOKEN)  # fmt: skip
    protocol = deploy_protocol(chain, chain.dev_key, params)
    for name in KEYS:
        chain.transfer(chain.dev_key, addr(name), 10**20)
    for name in ("o1", "o2", "d"):
        protocol.staking.transfer_tokens(chain.dev_key, addr(name), 10_000 * TOKEN)
    return chain, protocol


@pytest.fixture
def world(deployed: tuple[Chain, Protocol]) -> Iterator[tuple[Chain, Protocol]]:
    """The freshly deployed world; every block a test mines (on any branch) is undone after it."""
    with reverted(deployed[0]):
        yield deployed


class Observer:
    """Drains a watcher the way the service does, into a list of signed events."""

    def __init__(self) -> None:
        self.author = Author(LocalKeySigner(KEYS["observer"]))
        self.events: list[SignedEvent] = []

    def append(self, watcher: ChainWatcher, poll: Poll) -> list[k.ChainObserved]:
        for body in poll.observed:
            self.events.append(self.author.sign(body, len(self.events) + 1))
            watcher.mark_appended(body)
        watcher.commit(poll.cursor)
        return list(poll.observed)

    def drain(self, watcher: ChainWatcher) -> list[k.ChainObserved]:
        got: list[k.ChainObserved] = []
        for _ in range(100):
            poll = watcher.poll_once()
            got += self.append(watcher, poll)
            if not poll.behind:
                return got
        raise AssertionError("the watcher stayed behind for 100 polls")

    def state(self) -> State:
        return fold(self.events)


def next_round(chain: Chain, protocol: Protocol) -> None:
    block = chain.block_number()
    chain.mine((block // ROUND + 1) * ROUND - block - 1)
    protocol.initialize_round(chain.dev_key)


def redeem(protocol: Protocol, recipient: str, nonce: int, face: int) -> None:
    view = protocol.view()
    rand = 1000 + nonce
    t = Ticket(addr(recipient), addr("sender"), face, MAX_WIN_PROB, nonce, rand_hash(rand),
               view.round, view.round_block_hash)  # fmt: skip
    protocol.redeem(KEYS[recipient], t, sign_ticket(LocalKeySigner(KEYS["sender"]), t.hash()), rand)


def assert_matches_contracts(state: State, protocol: Protocol) -> None:
    broker, staking = protocol.broker.functions, protocol.staking
    for name in ("sender", "sender2"):
        account = Web3.to_checksum_address(addr(name))
        on_chain = Funds(broker.deposit(account).call(), broker.reserve(account).call())
        assert state.funds.get(addr(name), Funds()) == on_chain, name
    for name in ("o1", "o2"):
        assert state.stakes.get(addr(name), 0) == staking.stake(addr(name)), name
    assert state.round == protocol.rounds.functions.lastInitializedRound().call()


def test_a_scripted_history_folds_into_what_the_contracts_report(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    s = protocol.staking
    config = WatchConfig(depth=3, max_range=7, max_ranges_per_poll=2, window=8)
    watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "cursor.json", config)
    observer = Observer()

    s.bond(KEYS["o1"], 1000 * TOKEN, addr("o1"))
    s.register(KEYS["o1"], 100_000, 500_000)
    s.bond(KEYS["o2"], 500 * TOKEN, addr("o2"))
    s.register(KEYS["o2"], 0, 0)
    s.bond(KEYS["d"], 300 * TOKEN, addr("o1"))
    protocol.fund_deposit_and_reserve(KEYS["sender"], 3 * FACE, 4 * FACE)
    protocol.fund_deposit(KEYS["sender2"], FACE)
    protocol.fund_reserve(KEYS["sender2"], FACE)
    observer.drain(watcher)  # in several polls: 7 blocks a call, 2 calls a poll

    next_round(chain, protocol)
    redeem(protocol, "o1", 1, FACE)  # from the deposit
    redeem(protocol, "o1", 2, 3 * FACE)  # 2 from the deposit, 1 from o1's reserve share
    redeem(protocol, "o2", 3, 5 * FACE)  # only o2's share of the reserve (2) is paid
    s.reward(KEYS["o1"])
    s.reward(KEYS["o2"])
    lock = s.unbond(KEYS["d"], 100 * TOKEN)
    s.rebond(KEYS["d"], lock)
    s.unbond(KEYS["d"], 50 * TOKEN)  # stays locked
    s.bond(KEYS["d"], 0, addr("o2"))  # moves the whole bond, earnings included, to o2
    protocol.unlock(KEYS["sender2"])
    observer.drain(watcher)

    for _ in range(2):  # the unlock period
        next_round(chain, protocol)
    protocol.withdraw(KEYS["sender2"])
    s.reward(KEYS["o1"])
    s.reward(KEYS["o2"])
    all_of_it = s.delegator(addr("d")).bonded
    lock = s.unbond(KEYS["d"], all_of_it)  # the delegation ends
    s.rebond_from_unbonded(KEYS["d"], addr("o1"), lock)
    chain.mine(config.depth)
    observer.drain(watcher)

    state = observer.state()
    assert state.violation_list() == []
    assert_matches_contracts(state, protocol)
    assert state.funds[addr("sender")] == Funds(0, FACE)  # 3 + 4 funded, 1 + 3 + 2 paid
    bonded = protocol.bonding.functions.delegators(Web3.to_checksum_address(addr("d"))).call()
    assert state.delegations[addr("d")] == Delegation(addr("o1"), bonded[0])
    for who in ("d", "o1", "o2"):  # earnings followed with the contract's cumulative factors
        assert delegated_stake(state, addr(who)) == protocol.staking.delegator(addr(who)).bonded
    whats = {b.what for b in map(k.read_body, observer.events) if isinstance(b, k.ChainObserved)}
    assert whats == {"bonded", "unbonded", "rebonded", "reward", "deposit", "reserve", "round",
                     "redemption", "unlock", "withdraw", "minter", "inflation",
                     "factor"}  # fmt: skip
    # the minter's parameters as deployed and every round's budget, as the contract fixed them
    f = protocol.bonding.functions
    assert dict(state.minter_params) == {"inflation": 2_000_000, "inflation_change": 500,
                                         "target_bonding_rate": 500_000_000,
                                         "round_length": ROUND}  # fmt: skip
    assert state.minter and all(
        (m.inflation, m.mintable, m.active_stake, m.bonding_rate)
        == (f.inflationForRound(r).call(), f.mintableForRound(r).call(),
            f.activeStakeForRound(r).call(), f.bondingRateForRound(r).call())
        for r, m in state.minter.items()
    )  # fmt: skip


def test_confirmation_depth_holds_back_recent_blocks(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "c.json", WatchConfig(depth=4))
    observer = Observer()
    observer.drain(watcher)
    protocol.fund_deposit(KEYS["sender"], FACE)
    funded_at = chain.block_number()
    chain.mine(3)
    assert observer.drain(watcher) == []
    assert watcher.cursor.block_number == funded_at - 1
    chain.mine(1)
    (deposit,) = observer.drain(watcher)
    assert (deposit.what, deposit.block_number) == ("deposit", funded_at)
    assert deposit.args == (addr("sender"), FACE)
    assert deposit.block_hash == bytes(chain.w3.eth.get_block(funded_at)["hash"])
    assert watcher.cursor.block_number == chain.block_number() - 4


def test_a_restart_resumes_without_duplicates(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    path, config = tmp_path / "role" / "chain-watcher.json", WatchConfig(depth=0)
    observer = Observer()
    protocol.fund_deposit(KEYS["sender"], FACE)
    first = observer.drain(ChainWatcher(chain, protocol.addresses(), path, config))
    assert [b.what for b in first] == ["minter", "deposit"]  # the minter's, at deployment

    protocol.fund_deposit(KEYS["sender"], 2 * FACE)
    protocol.fund_reserve(KEYS["sender"], 3 * FACE)
    restarted = ChainWatcher(chain, protocol.addresses(), path, config)
    assert [b.what for b in observer.drain(restarted)] == ["deposit", "reserve"]
    assert restarted.marks == 0  # the committed cursor is past them
    assert observer.state().funds[addr("sender")] == Funds(3 * FACE, 3 * FACE)

    # a crash after appending a log but before the cursor was committed: the node's log says
    # what it appended, and the watcher does not return it again
    protocol.fund_deposit(KEYS["sender"], 4 * FACE)
    protocol.fund_reserve(KEYS["sender"], 5 * FACE)
    crashed = ChainWatcher(chain, protocol.addresses(), path, config)
    appended = crashed.poll_once().observed[0]  # appended, then the process died
    resumed = ChainWatcher(chain, protocol.addresses(), path, config)
    assert [b.what for b in resumed.poll_once().observed] == ["deposit", "reserve"]  # unmarked
    resumed.mark_appended(appended)
    assert resumed.marks == 1
    assert [b.what for b in resumed.poll_once().observed] == ["reserve"]

    with pytest.raises(CursorMismatch):  # a cursor from other contracts is not reused
        ChainWatcher(chain, {"TicketBroker": protocol.rounds.address}, path, config)


def signed_again(chain: Chain, tx_hash: bytes, key: bytes) -> bytes:
    """The raw bytes of a mined transaction, signed again (the same hash), to send elsewhere."""
    tx = chain.w3.eth.get_transaction(HexBytes(tx_hash))
    fields = {"to": tx["to"], "value": tx["value"], "gas": tx["gas"], "gasPrice": tx["gasPrice"],
              "nonce": tx["nonce"], "data": tx["input"], "chainId": chain.chain_id}  # fmt: skip
    signed = Account.sign_transaction(fields, key)
    assert bytes(signed.hash) == tx_hash
    return bytes(signed.raw_transaction)


def test_a_reorg_is_found_and_its_blocks_read_again(
    world: tuple[Chain, Protocol], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain, protocol = world
    assert chain.tester is not None
    config = WatchConfig(depth=1, window=16)
    watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "c.json", config)
    observer = Observer()
    observer.drain(watcher)
    fork = chain.block_number()
    snapshot = chain.tester.take_snapshot()
    receipt = protocol.fund_deposit(KEYS["sender"], FACE)
    chain.mine(2)
    (old,) = observer.drain(watcher)
    assert old.block_number == fork + 1
    raw = signed_again(chain, bytes(receipt["transactionHash"]), KEYS["sender"])

    chain.tester.revert_to_snapshot(snapshot)  # the other branch: one block, then the same tx
    chain.mine(1)
    chain.w3.eth.send_raw_transaction(raw)
    protocol.fund_reserve(KEYS["sender"], 2 * FACE)
    chain.mine(3)
    with caplog.at_level(logging.WARNING, logger="castnet.chain.watcher"):
        poll = watcher.poll_once()
    assert poll.reorg is not None and poll.reorg.fork_block == fork
    assert poll.reorg.depth == 2  # the cursor was at fork + 2
    assert f"after block {fork} left the chain" in caplog.text
    assert [(b.what, b.block_number) for b in poll.observed] == [("deposit", fork + 2),
                                                                 ("reserve", fork + 3)]  # fmt: skip
    assert (poll.observed[0].tx_hash, poll.observed[0].log_index) == (old.tx_hash, old.log_index)
    observer.append(watcher, poll)
    assert observer.drain(watcher) == []
    assert caplog.text.count("left the chain") == 1

    state = observer.state()
    # the log was appended twice, from two blocks: counted once, the conflict is the audit trail
    assert [v.rule for v in state.violation_list()] == ["chain-conflict"]
    assert state.funds[addr("sender")] == Funds(FACE, 2 * FACE)
    assert_matches_contracts(state, protocol)


def test_a_reorg_within_the_confirmation_depth_never_reaches_the_log(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    assert chain.tester is not None
    watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "c.json", WatchConfig(depth=3))
    observer = Observer()
    observer.drain(watcher)
    snapshot = chain.tester.take_snapshot()
    protocol.fund_deposit(KEYS["sender"], FACE)  # dropped by the reorg
    chain.mine(1)
    assert observer.drain(watcher) == []
    chain.tester.revert_to_snapshot(snapshot)
    protocol.fund_reserve(KEYS["sender2"], FACE)
    chain.mine(3)
    poll = watcher.poll_once()
    assert poll.reorg is None
    assert [(b.what, b.args[0]) for b in poll.observed] == [("reserve", addr("sender2"))]


class RacedWatcher(ChainWatcher):
    """A watcher whose first eth_getLogs answer is overtaken by a reorg (`race` runs right after
    it), or comes from a node that still has the old branch (`stale` logs are answered)."""

    race: Callable[[], None] | None = None
    stale: list[Any] | None = None

    def _logs(self, first: int, last: int) -> list[Any]:
        logs = super()._logs(first, last)
        race, stale, self.race, self.stale = self.race, self.stale, None, None
        if race is not None:
            race()
        return stale if stale is not None else logs


@pytest.mark.parametrize("how", ["reorg during the read", "logs from a stale node"])
def test_logs_from_a_branch_the_chain_left_are_not_emitted(
    world: tuple[Chain, Protocol], tmp_path: Path, how: str
) -> None:
    chain, protocol = world
    tester = chain.tester
    assert tester is not None
    # a window of 1: only the range's last block is checked, the deposit's block is not
    config = WatchConfig(depth=0, window=1 if how == "reorg during the read" else 64)
    watcher = RacedWatcher(chain, protocol.addresses(), tmp_path / "c.json", config)
    observer = Observer()
    observer.drain(watcher)
    snapshot = tester.take_snapshot()
    protocol.fund_deposit(KEYS["sender"], FACE)  # on the branch that is left
    chain.mine(2)
    old_logs = watcher._logs(0, chain.block_number())

    def other_branch() -> None:
        tester.revert_to_snapshot(snapshot)
        protocol.fund_reserve(KEYS["sender2"], FACE)
        chain.mine(2)

    if how == "reorg during the read":
        watcher.race = other_branch
    else:
        other_branch()
        watcher.stale = old_logs
    assert observer.append(watcher, watcher.poll_once()) == []
    assert [b.what for b in observer.drain(watcher)] == ["reserve"]
    assert dict(observer.state().funds) == {addr("sender2"): Funds(0, FACE)}


def test_a_reorg_deeper_than_the_window_stops_the_watcher(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    assert chain.tester is not None
    snapshot = chain.tester.take_snapshot()
    chain.mine(6)
    watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "c.json",
                           WatchConfig(depth=0, window=4))  # fmt: skip
    Observer().drain(watcher)
    chain.tester.revert_to_snapshot(snapshot)
    chain.transfer(chain.dev_key, addr("d"), 1)  # the new branch differs from its first block
    chain.mine(8)
    with pytest.raises(ReorgTooDeep, match="deeper than the window of 4"):
        watcher.poll_once()


async def test_the_service_appends_each_log_once_to_the_store(
    world: tuple[Chain, Protocol], tmp_path: Path
) -> None:
    chain, protocol = world
    protocol.fund_deposit_and_reserve(KEYS["sender"], 3 * FACE, 4 * FACE)
    protocol.fund_deposit(KEYS["sender2"], FACE)
    protocol.unlock(KEYS["sender2"])
    config = WatchConfig(depth=0)
    expected = len(Observer().drain(ChainWatcher(chain, protocol.addresses(),
                                                 tmp_path / "other.json", config)))  # fmt: skip
    assert expected == 5  # the minter's parameters, the deposits and reserves, and the unlock

    author = Author(LocalKeySigner(KEYS["observer"]))
    attempts = 0
    done = trio.Event()
    with EventStore.open_dir(tmp_path / "node") as store:
        store_service = StoreService(store)

        async def emit(body: k.ChainObserved) -> SignedEvent:
            nonlocal attempts
            attempts += 1
            if attempts == 2:
                raise OSError("disk full")  # the second append fails once
            event = author.sign(body, attempts)
            assert (await store_service.append(event)).outcome is Outcome.APPENDED
            if store.count() == expected:
                done.set()
            return event

        watcher = ChainWatcher(chain, protocol.addresses(), tmp_path / "node" / "cw.json", config)
        service = ChainWatcherService(watcher, emit, interval_s=0.01)
        async with trio.open_nursery() as nursery:
            await nursery.start(store_service.run)
            await nursery.start(service.run)
            with trio.fail_after(30):
                await done.wait()
            nursery.cancel_scope.cancel()
        state = fold(decode(raw) for _, raw in store.read())
    assert service.failures == 1 and service.emitted == expected
    assert store_service.commits >= 1
    assert state.events == expected and state.violation_list() == []
    assert state.funds[addr("sender")] == Funds(3 * FACE, 4 * FACE)
