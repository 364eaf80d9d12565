# pragma version ~=0.4.3
"""
@title castnet ticket broker
@notice Senders fund a deposit and a reserve; recipients redeem winning probabilistic tickets,
        byte-compatible with Livepeer's TicketBroker (packed hash, signed-message signature,
        win rule keccak256(sig ++ pad32(recipientRand)) < winProb). Face value is paid from the
        deposit, then from the recipient's share of the reserve (reserve / active pool size per
        round). With a bonding contract set (the fee sink), fees go to it, to be split by fee
        share, and only active orchestrators may claim from a reserve.
"""

interface Rounds:
    def currentRound() -> uint256: view
    def currentRoundInitialized() -> bool: view
    def blockHashForRound(round: uint256) -> bytes32: view
    def ticketRound(creation_round: uint256) -> (uint256, bool, bytes32): view

interface FeeSink:
    def updateFees(recipient: address, round: uint256): payable
    def isActive(orchestrator: address) -> bool: view

event DepositFunded:
    sender: indexed(address)
    amount: uint256

event ReserveFunded:
    sender: indexed(address)
    amount: uint256

event WinningTicketRedeemed:
    sender: indexed(address)
    recipient: indexed(address)
    faceValue: uint256
    paid: uint256
    ticketHash: bytes32

event ReserveClaimed:
    sender: indexed(address)
    recipient: indexed(address)
    amount: uint256

event Unlock:
    sender: indexed(address)
    withdrawRound: uint256

event UnlockCancelled:
    sender: indexed(address)

event Withdrawal:
    sender: indexed(address)
    deposit: uint256
    reserve: uint256

struct Ticket:
    recipient: address
    sender: address
    faceValue: uint256
    winProb: uint256
    senderNonce: uint256
    recipientRandHash: bytes32
    creationRound: uint256
    creationRoundBlockHash: bytes32

HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

rounds: public(address)
feeSink: public(address)
owner: public(address)
poolSize: public(uint256)
ticketValidityRounds: public(uint256)
unlockPeriodRounds: public(uint256)

deposit: public(HashMap[address, uint256])
reserve: public(HashMap[address, uint256])
withdrawRound: public(HashMap[address, uint256])
# reserve claims per sender per round: total and per recipient
claimedInRound: public(HashMap[address, HashMap[uint256, uint256]])
claimedBy: public(HashMap[address, HashMap[uint256, HashMap[address, uint256]]])
usedTickets: public(HashMap[bytes32, bool])


@deploy
def __init__(rounds: address, pool_size: uint256, validity_rounds: uint256, unlock_rounds: uint256):
    assert pool_size > 0, "pool size must be positive"
    self.rounds = rounds
    self.poolSize = pool_size
    self.ticketValidityRounds = validity_rounds
    self.unlockPeriodRounds = unlock_rounds
    self.owner = msg.sender


@external
def setFeeSink(sink: address):
    assert msg.sender == self.owner, "only the owner"
    self.feeSink = sink


@external
def setPoolSize(size: uint256):
    assert msg.sender == self.owner or msg.sender == self.feeSink, "only the owner or bonding"
    assert size > 0, "pool size must be positive"
    self.poolSize = size


@payable
@external
def fundDeposit():
    self._cancel_unlock(msg.sender)
    self.deposit[msg.sender] += msg.value
    log DepositFunded(sender=msg.sender, amount=msg.value)


@payable
@external
def fundReserve():
    self._cancel_unlock(msg.sender)
    self.reserve[msg.sender] += msg.value
    log ReserveFunded(sender=msg.sender, amount=msg.value)


@payable
@external
def fundDepositAndReserve(deposit_amount: uint256, reserve_amount: uint256):
    assert msg.value == deposit_amount + reserve_amount, "msg.value does not equal sum"
    self._cancel_unlock(msg.sender)
    self.deposit[msg.sender] += deposit_amount
    self.reserve[msg.sender] += reserve_amount
    log DepositFunded(sender=msg.sender, amount=deposit_amount)
    log ReserveFunded(sender=msg.sender, amount=reserve_amount)


@internal
def _cancel_unlock(sender: address):
    if self.withdrawRound[sender] != 0:
        self.withdrawRound[sender] = 0
        log UnlockCancelled(sender=sender)


@view
@internal
def _ticket_hash(t: Ticket) -> bytes32:
    aux: Bytes[64] = b""
    if t.creationRound != 0 or t.creationRoundBlockHash != empty(bytes32):
        aux = concat(convert(t.creationRound, bytes32), t.creationRoundBlockHash)
    return keccak256(concat(
        convert(t.recipient, bytes20), convert(t.sender, bytes20),
        convert(t.faceValue, bytes32), convert(t.winProb, bytes32),
        convert(t.senderNonce, bytes32), t.recipientRandHash, aux,
    ))


@view
@external
def getTicketHash(t: Ticket) -> bytes32:
    return self._ticket_hash(t)


@view
@internal
def _recover(digest: bytes32, sig: Bytes[65]) -> address:
    r: uint256 = extract32(sig, 0, output_type=uint256)
    s: uint256 = extract32(sig, 32, output_type=uint256)
    v: uint256 = convert(slice(sig, 64, 1), uint256)
    assert s <= HALF_N, "signature s is high"
    assert v == 27 or v == 28, "signature v must be 27 or 28"
    return ecrecover(digest, v, r, s)


@view
@internal
def _reserve_share(sender: address, recipient: address, round: uint256) -> uint256:
    share: uint256 = (self.reserve[sender] + self.claimedInRound[sender][round]) // self.poolSize
    claimed: uint256 = self.claimedBy[sender][round][recipient]
    if claimed >= share:
        return 0
    return share - claimed


@view
@external
def claimableReserve(sender: address, recipient: address) -> uint256:
    return self._reserve_share(sender, recipient, staticcall Rounds(self.rounds).currentRound())


@view
@external
def roundView() -> (uint256, bytes32, uint256):
    """
    @notice What ticket params are made at, in one call: the current round, its block hash, and
            the pool size that divides a sender's reserve
    """
    current: uint256 = staticcall Rounds(self.rounds).currentRound()
    return (current, staticcall Rounds(self.rounds).blockHashForRound(current), self.poolSize)


@view
@external
def senderInfo(sender: address, claimant: address) -> (uint256, uint256, uint256, uint256, uint256):
    """
    @notice What a recipient checks of a sender, in one call: deposit, reserve, withdraw round,
            reserve claimed in the current round, and of that, by `claimant`
    """
    current: uint256 = staticcall Rounds(self.rounds).currentRound()
    return (self.deposit[sender], self.reserve[sender], self.withdrawRound[sender],
            self.claimedInRound[sender][current], self.claimedBy[sender][current][claimant])


@external
def redeemWinningTicket(t: Ticket, sig: Bytes[65], recipientRand: uint256):
    ticket_hash: bytes32 = self._ticket_hash(t)
    assert t.recipient != empty(address), "ticket recipient is null address"
    assert t.sender != empty(address), "ticket sender is null address"
    assert not self.usedTickets[ticket_hash], "ticket is used"
    assert keccak256(convert(recipientRand, bytes32)) == t.recipientRandHash, "recipientRand does not match recipientRandHash"
    current: uint256 = 0
    initialized: bool = False
    creation_hash: bytes32 = empty(bytes32)
    current, initialized, creation_hash = staticcall Rounds(self.rounds).ticketRound(t.creationRound)
    assert initialized, "current round is not initialized"
    assert t.creationRound + self.ticketValidityRounds > current, "ticket is expired"
    assert creation_hash == t.creationRoundBlockHash, "ticket creationRound blockHash invalid"
    digest: bytes32 = keccak256(concat(b"\x19Ethereum Signed Message:\n32", ticket_hash))
    assert self._recover(digest, sig) == t.sender, "invalid signature over ticket hash"
    assert convert(keccak256(concat(sig, convert(recipientRand, bytes32))), uint256) < t.winProb, "ticket did not win"
    unlock_round: uint256 = self.withdrawRound[t.sender]
    assert unlock_round == 0 or unlock_round > current, "sender is unlocked"
    self.usedTickets[ticket_hash] = True

    amount: uint256 = min(t.faceValue, self.deposit[t.sender])
    self.deposit[t.sender] -= amount
    rest: uint256 = t.faceValue - amount
    if rest > 0 and (self.feeSink == empty(address) or staticcall FeeSink(self.feeSink).isActive(t.recipient)):
        claim: uint256 = min(rest, self._reserve_share(t.sender, t.recipient, current))
        if claim > 0:
            self.reserve[t.sender] -= claim
            self.claimedInRound[t.sender][current] += claim
            self.claimedBy[t.sender][current][t.recipient] += claim
            amount += claim
            log ReserveClaimed(sender=t.sender, recipient=t.recipient, amount=claim)
    log WinningTicketRedeemed(sender=t.sender, recipient=t.recipient, faceValue=t.faceValue, paid=amount, ticketHash=ticket_hash)
    if amount > 0:
        if self.feeSink != empty(address):
            extcall FeeSink(self.feeSink).updateFees(t.recipient, current, value=amount)
        else:
            send(t.recipient, amount)


@external
def unlock():
    assert self.deposit[msg.sender] > 0 or self.reserve[msg.sender] > 0, "sender deposit and reserve are zero"
    assert self.withdrawRound[msg.sender] == 0, "unlock already initiated"
    when: uint256 = staticcall Rounds(self.rounds).currentRound() + self.unlockPeriodRounds
    self.withdrawRound[msg.sender] = when
    log Unlock(sender=msg.sender, withdrawRound=when)


@external
def cancelUnlock():
    assert self.withdrawRound[msg.sender] != 0, "sender is not in an unlocking state"
    self._cancel_unlock(msg.sender)


@external
def withdraw():
    when: uint256 = self.withdrawRound[msg.sender]
    assert when != 0, "sender is not unlocking"
    assert when <= staticcall Rounds(self.rounds).currentRound(), "account is locked"
    d: uint256 = self.deposit[msg.sender]
    r: uint256 = self.reserve[msg.sender]
    self.deposit[msg.sender] = 0
    self.reserve[msg.sender] = 0
    self.withdrawRound[msg.sender] = 0
    log Withdrawal(sender=msg.sender, deposit=d, reserve=r)
    send(msg.sender, d + r)
