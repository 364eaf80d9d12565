# pragma version ~=0.4.3
"""
@title castnet bonding
@notice Stake, delegation and the minter. Orchestrators bond stake to themselves and register a
        reward cut and a fee share; delegators bond to an orchestrator. The largest registered
        stakes, up to `maxActive`, form the pool; a change to the pool or to a stake made in round
        R counts from round R+1 (an orchestrator joining the pool in R is active from R+1, one
        leaving it stays active until R ends), as Livepeer's pending/active split does.

        Minter: the first call in a round (the Rounds contract calls `initializeRound` when the
        round is initialized) fixes the round: its active stake (the pool's stake at that point)
        and the bonding rate = active stake / token supply; it moves `inflation` by
        `inflationChange` toward `targetBondingRate` (up when less is bonded, down when more,
        never below 0), then fixes the round's mintable tokens = supply x inflation. Each active
        orchestrator may call `reward()` once per round and mints
        mintable x (its stake at the round's start) / (the round's active stake); its cut is
        commission, the rest goes to the stake that was bonded to it when the round started.

        Earnings use cumulative factors (no loop over delegators): per orchestrator, a reward
        factor F (stake value per unit bonded, scaled by PREC) and a fee factor G, indexed by
        epoch; an orchestrator opens a new epoch in each round in which its factors or its
        delegators change, so an epoch never spans two rounds. A delegator with `bonded` at
        epoch L is worth bonded * F[e] / F[L] at epoch e and has earned
        bonded * (G[e] - G[L]) / F[L] in fees. A delegator that bonds, unbonds, rebonds or claims
        in round R takes R's epoch as its baseline: its whole bond earns from round R+1 (the share
        of R's reward and fees on its stake stays in the contract, as in Livepeer). Fees of a
        round are shared by the stake bonded when it started, at that moment's factor. An
        orchestrator's `reward()` claims its own earnings (the round's reward included) and adds
        its commission to its bond, so its own bond's share of the round's later fees stays in
        the contract too.
"""

interface Rounds:
    def roundLength() -> uint256: view
    def currentRound() -> uint256: view
    def currentRoundInitialized() -> bool: view

interface Token:
    def totalSupply() -> uint256: view
    def mint(receiver: address, amount: uint256): nonpayable
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable

interface Broker:
    def setPoolSize(size: uint256): nonpayable

event OrchestratorRegistered:
    orchestrator: indexed(address)
    rewardCut: uint256
    feeShare: uint256

event Bond:
    delegator: indexed(address)
    orchestrator: indexed(address)
    oldOrchestrator: address
    amount: uint256
    bonded: uint256

event Unbond:
    delegator: indexed(address)
    orchestrator: indexed(address)
    amount: uint256
    bonded: uint256
    lockId: uint256
    withdrawRound: uint256

event Rebond:
    delegator: indexed(address)
    orchestrator: indexed(address)
    amount: uint256
    bonded: uint256
    lockId: uint256

event WithdrawStake:
    delegator: indexed(address)
    lockId: uint256
    amount: uint256

event Reward:
    orchestrator: indexed(address)
    amount: uint256

event WithdrawFees:
    delegator: indexed(address)
    amount: uint256

event MinterParameters:
    inflation: uint256
    inflationChange: uint256
    targetBondingRate: uint256
    roundLength: uint256  # blocks: a log's round is its block number // roundLength

event EarningsFactor:
    orchestrator: indexed(address)
    round: uint256
    rewardFactor: uint256  # the orchestrator's cumulative reward factor after the round's reward
    commission: uint256  # what joined the orchestrator's own bond

event RoundRewards:
    round: indexed(uint256)
    inflation: uint256
    mintable: uint256
    activeStake: uint256
    bondingRate: uint256
    totalSupply: uint256

struct Orchestrator:
    registered: bool
    rewardCut: uint256  # parts per million of a reward kept as commission
    feeShare: uint256  # parts per million of fees given to the stake
    delegatedAmount: uint256  # total stake bonded to it, earnings included
    lastRewardRound: uint256
    epoch: uint256

struct Delegator:
    bonded: uint256  # as of `lastClaimEpoch`
    delegate: address
    lastClaimEpoch: uint256
    fees: uint256  # wei claimed and not withdrawn
    nextLockId: uint256

struct UnbondingLock:
    amount: uint256
    withdrawRound: uint256

PPM: constant(uint256) = 1_000_000
PPB: constant(uint256) = 1_000_000_000
PREC: constant(uint256) = 10 ** 27
MAX_ACTIVE: constant(uint256) = 100
MAX_ORCHESTRATORS: constant(uint256) = 100

rounds: public(address)
token: public(address)
broker: public(address)
unbondingPeriod: public(uint256)  # rounds
maxActive: public(uint256)
inflation: public(uint256)  # parts per billion of the token supply minted per round
inflationChange: public(uint256)  # parts per billion that inflation moves per round
targetBondingRate: public(uint256)  # parts per billion of the supply

orchestrators: public(HashMap[address, Orchestrator])
delegators: public(HashMap[address, Delegator])
locks: public(HashMap[address, HashMap[uint256, UnbondingLock]])
rewardFactor: public(HashMap[address, HashMap[uint256, uint256]])  # 0 reads as PREC
feeFactor: public(HashMap[address, HashMap[uint256, uint256]])

active: public(DynArray[address, MAX_ACTIVE])
activeIndex: HashMap[address, uint256]  # position in `active` + 1; 0 when not active
totalActiveStake: public(uint256)
listed: DynArray[address, MAX_ORCHESTRATORS]  # every address ever registered
isListed: HashMap[address, bool]

mintableForRound: public(HashMap[uint256, uint256])
activeStakeForRound: public(HashMap[uint256, uint256])
mintedInRound: public(HashMap[uint256, uint256])
inflationForRound: public(HashMap[uint256, uint256])
bondingRateForRound: public(HashMap[uint256, uint256])  # parts per billion
roundFixed: public(HashMap[uint256, bool])

epochRound: public(HashMap[address, uint256])  # the round of an orchestrator's current epoch
stakeRound: HashMap[address, uint256]  # the round of the stake's last change
stakeBefore: HashMap[address, uint256]  # the stake when that round started
activationRound: public(HashMap[address, uint256])
deactivationRound: public(HashMap[address, uint256])


@deploy
def __init__(rounds: address, token: address, broker: address, unbonding_period: uint256,
             max_active: uint256, inflation: uint256, inflation_change: uint256,
             target_bonding_rate: uint256):
    assert max_active > 0 and max_active <= MAX_ACTIVE, "max active out of range"
    assert inflation <= PPB, "inflation above 100%"
    assert inflation_change <= PPB, "inflation change above 100%"
    assert target_bonding_rate <= PPB, "target bonding rate above 100%"
    self.rounds = rounds
    self.token = token
    self.broker = broker
    self.unbondingPeriod = unbonding_period
    self.maxActive = max_active
    self.inflation = inflation
    self.inflationChange = inflation_change
    self.targetBondingRate = target_bonding_rate
    log MinterParameters(inflation=inflation, inflationChange=inflation_change,
                         targetBondingRate=target_bonding_rate,
                         roundLength=staticcall Rounds(rounds).roundLength())


# -- rounds --------------------------------------------------------------------------------

@view
@internal
def _round() -> uint256:
    return staticcall Rounds(self.rounds).currentRound()


@internal
def _fix_round() -> uint256:
    """Fix the current round's active stake, inflation and mintable tokens, once, before any
    change made in the round; returns the round."""
    current: uint256 = self._round()
    if self.roundFixed[current]:
        return current
    self.roundFixed[current] = True
    supply: uint256 = staticcall Token(self.token).totalSupply()
    active: uint256 = self.totalActiveStake
    rate: uint256 = 0
    if supply > 0:
        rate = active * PPB // supply
    if rate < self.targetBondingRate:
        self.inflation = min(self.inflation + self.inflationChange, PPB)
    elif rate > self.targetBondingRate:
        self.inflation -= min(self.inflationChange, self.inflation)
    mintable: uint256 = supply * self.inflation // PPB
    self.activeStakeForRound[current] = active
    self.mintableForRound[current] = mintable
    self.inflationForRound[current] = self.inflation
    self.bondingRateForRound[current] = rate
    log RoundRewards(round=current, inflation=self.inflation, mintable=mintable,
                     activeStake=active, bondingRate=rate, totalSupply=supply)
    return current


@external
def initializeRound():
    """Called by the Rounds contract when it initializes a round."""
    assert msg.sender == self.rounds, "only the rounds contract"
    self._fix_round()


@view
@internal
def _stake_at(o: address, round: uint256) -> uint256:
    """`o`'s stake as it stood when `round` (the current round) started."""
    if self.stakeRound[o] == round:
        return self.stakeBefore[o]
    return self.orchestrators[o].delegatedAmount


@view
@internal
def _active_in(o: address, round: uint256) -> bool:
    return self.activationRound[o] <= round and round < self.deactivationRound[o]


# -- earnings ------------------------------------------------------------------------------

@view
@internal
def _reward_factor(o: address, epoch: uint256) -> uint256:
    f: uint256 = self.rewardFactor[o][epoch]
    if f == 0:
        return PREC
    return f


@view
@internal
def _pending(d: address) -> (uint256, uint256):
    """(bonded, fees) of `d` with the earnings not yet claimed."""
    dl: Delegator = self.delegators[d]
    if dl.delegate == empty(address) or dl.bonded == 0:
        return dl.bonded, dl.fees
    o: address = dl.delegate
    e: uint256 = self.orchestrators[o].epoch
    if dl.lastClaimEpoch >= e:
        return dl.bonded, dl.fees
    start: uint256 = self._reward_factor(o, dl.lastClaimEpoch)
    bonded: uint256 = dl.bonded * self._reward_factor(o, e) // start
    fees: uint256 = dl.fees + dl.bonded * (self.feeFactor[o][e] - self.feeFactor[o][dl.lastClaimEpoch]) // start
    return bonded, fees


@internal
def _touch(o: address) -> uint256:
    """`o`'s epoch for the current round, opened (factors carried over) if it is not yet."""
    e: uint256 = self.orchestrators[o].epoch
    current: uint256 = self._round()
    if e > 0 and self.epochRound[o] == current:
        return e
    self.rewardFactor[o][e + 1] = self._reward_factor(o, e)
    self.feeFactor[o][e + 1] = self.feeFactor[o][e]
    self.orchestrators[o].epoch = e + 1
    self.epochRound[o] = current
    return e + 1


@internal
def _checkpoint(d: address, o: address):
    """Start `d`'s earnings at the end of the current round: the round's epoch."""
    self.delegators[d].lastClaimEpoch = self._touch(o)


@internal
def _claim(d: address):
    bonded: uint256 = 0
    fees: uint256 = 0
    bonded, fees = self._pending(d)
    self.delegators[d].bonded = bonded
    self.delegators[d].fees = fees
    o: address = self.delegators[d].delegate
    if o != empty(address):
        self._checkpoint(d, o)


# -- active set ----------------------------------------------------------------------------

@internal
def _activate(o: address):
    current: uint256 = self._round()
    if not self._active_in(o, current):
        self.activationRound[o] = current + 1
    self.deactivationRound[o] = max_value(uint256)
    self.active.append(o)
    self.activeIndex[o] = len(self.active)
    self.totalActiveStake += self.orchestrators[o].delegatedAmount


@internal
def _deactivate(o: address):
    i: uint256 = self.activeIndex[o] - 1
    last: address = self.active.pop()
    if last != o:
        self.active[i] = last
        self.activeIndex[last] = i + 1
    self.activeIndex[o] = 0
    self.totalActiveStake -= self.orchestrators[o].delegatedAmount
    self.deactivationRound[o] = self._round() + 1


@internal
def _update_active(o: address, old_stake: uint256):
    """Keep the active set the largest registered stakes after `o`'s stake changed."""
    size: uint256 = len(self.active)
    new_stake: uint256 = self.orchestrators[o].delegatedAmount
    if self.activeIndex[o] != 0:
        self.totalActiveStake = self.totalActiveStake + new_stake - old_stake
        if not self.orchestrators[o].registered or new_stake == 0:
            self._deactivate(o)
        if new_stake < old_stake:
            best: address = empty(address)
            best_stake: uint256 = 0
            for c: address in self.listed:
                s: uint256 = self.orchestrators[c].delegatedAmount
                if self.activeIndex[c] == 0 and self.orchestrators[c].registered and s > best_stake:
                    best = c
                    best_stake = s
            if best != empty(address):
                if self.activeIndex[o] != 0 and best_stake > new_stake:
                    self._deactivate(o)
                if len(self.active) < self.maxActive:
                    self._activate(best)
    elif self.orchestrators[o].registered and new_stake > 0:
        if len(self.active) < self.maxActive:
            self._activate(o)
        else:
            low: address = empty(address)
            low_stake: uint256 = max_value(uint256)
            for c: address in self.active:
                s: uint256 = self.orchestrators[c].delegatedAmount
                if s < low_stake:
                    low = c
                    low_stake = s
            if new_stake > low_stake:
                self._deactivate(low)
                self._activate(o)
    if len(self.active) != size and len(self.active) > 0:
        extcall Broker(self.broker).setPoolSize(len(self.active))


@internal
def _note_stake(o: address):
    """Remember `o`'s stake at the round's start before its first change in the round."""
    current: uint256 = self._round()
    if self.stakeRound[o] != current:
        self.stakeRound[o] = current
        self.stakeBefore[o] = self.orchestrators[o].delegatedAmount


@internal
def _add_stake(o: address, amount: uint256):
    self._note_stake(o)
    old: uint256 = self.orchestrators[o].delegatedAmount
    self.orchestrators[o].delegatedAmount = old + amount
    self._update_active(o, old)


@internal
def _remove_stake(o: address, amount: uint256):
    self._note_stake(o)
    old: uint256 = self.orchestrators[o].delegatedAmount
    self.orchestrators[o].delegatedAmount = old - amount
    self._update_active(o, old)


# -- orchestrators -------------------------------------------------------------------------

@external
def register(reward_cut: uint256, fee_share: uint256):
    self._fix_round()
    assert reward_cut <= PPM, "reward cut above 100%"
    assert fee_share <= PPM, "fee share above 100%"
    dl: Delegator = self.delegators[msg.sender]
    assert dl.delegate == msg.sender and dl.bonded > 0, "bond to yourself before registering"
    self.orchestrators[msg.sender].rewardCut = reward_cut
    self.orchestrators[msg.sender].feeShare = fee_share
    if not self.orchestrators[msg.sender].registered:
        self.orchestrators[msg.sender].registered = True
        if not self.isListed[msg.sender]:
            assert len(self.listed) < MAX_ORCHESTRATORS, "too many orchestrators"
            self.listed.append(msg.sender)
            self.isListed[msg.sender] = True
        self._update_active(msg.sender, self.orchestrators[msg.sender].delegatedAmount)
    log OrchestratorRegistered(orchestrator=msg.sender, rewardCut=reward_cut, feeShare=fee_share)


@external
def reward():
    o: address = msg.sender
    current: uint256 = self._fix_round()
    assert self.orchestrators[o].registered, "not a registered orchestrator"
    assert self._active_in(o, current), "orchestrator is not active"
    assert staticcall Rounds(self.rounds).currentRoundInitialized(), "current round is not initialized"
    assert self.orchestrators[o].lastRewardRound < current, "already rewarded in this round"
    self.orchestrators[o].lastRewardRound = current
    stake: uint256 = self._stake_at(o, current)
    amount: uint256 = 0
    if self.activeStakeForRound[current] > 0:
        amount = self.mintableForRound[current] * stake // self.activeStakeForRound[current]
    amount = min(amount, self.mintableForRound[current] - self.mintedInRound[current])
    self.mintedInRound[current] += amount

    e: uint256 = self._touch(o)
    commission: uint256 = amount * self.orchestrators[o].rewardCut // PPM
    after: uint256 = self._reward_factor(o, e)
    if stake > 0:
        after += after * (amount - commission) // stake
    self.rewardFactor[o][e] = after
    # the orchestrator claims its own earnings, this reward included, and the commission joins
    # its bond; its stake's share of fees that arrive later in this round stays in the contract
    self._claim(o)
    self.delegators[o].bonded += commission
    self._add_stake(o, amount)
    extcall Token(self.token).mint(self, amount)
    log Reward(orchestrator=o, amount=amount)
    log EarningsFactor(orchestrator=o, round=current, rewardFactor=after, commission=commission)


@payable
@external
def updateFees(recipient: address, round: uint256):
    """Called by the ticket broker with the face value a winning ticket paid. The stake's share
    goes to the stake bonded when the round started, valued at the factor of that moment (the
    previous epoch's: a reward of this round does not count)."""
    assert msg.sender == self.broker, "only the ticket broker"
    assert self.orchestrators[recipient].registered, "ticket recipient is not a registered orchestrator"
    total: uint256 = self._stake_at(recipient, self._round())
    shared: uint256 = msg.value * self.orchestrators[recipient].feeShare // PPM
    if shared > 0 and total > 0:
        e: uint256 = self._touch(recipient)
        self.feeFactor[recipient][e] += self._reward_factor(recipient, e - 1) * shared // total
    else:
        shared = 0
    self.delegators[recipient].fees += msg.value - shared  # the broker's redemption log says it


# -- delegators ----------------------------------------------------------------------------

@external
def bond(amount: uint256, to: address):
    """Bond `amount` more to `to`; bonding to another orchestrator moves the whole stake."""
    self._fix_round()
    d: address = msg.sender
    assert to != empty(address), "bond to the null address"
    assert to == d or self.orchestrators[to].registered, "orchestrator is not registered"
    self._claim(d)
    old: address = self.delegators[d].delegate
    before: uint256 = self.delegators[d].bonded
    bonded: uint256 = before + amount
    if old != to and old != empty(address) and before > 0:
        assert not (old == d and self.orchestrators[d].registered), "a registered orchestrator stays bonded to itself"
        self._remove_stake(old, before)
        self._add_stake(to, bonded)
    else:
        assert amount > 0, "nothing to bond"
        self._add_stake(to, amount)
    if old != to:
        self.delegators[d].delegate = to
        self._checkpoint(d, to)
    self.delegators[d].bonded = bonded
    if amount > 0:
        assert extcall Token(self.token).transferFrom(d, self, amount), "token transfer failed"
    log Bond(delegator=d, orchestrator=to, oldOrchestrator=old, amount=amount, bonded=bonded)


@external
def unbond(amount: uint256) -> uint256:
    """Move `amount` of the bond into a lock released after the unbonding period."""
    self._fix_round()
    d: address = msg.sender
    self._claim(d)
    o: address = self.delegators[d].delegate
    assert o != empty(address), "not bonded"
    assert amount > 0 and amount <= self.delegators[d].bonded, "unbond amount exceeds bonded stake"
    bonded: uint256 = self.delegators[d].bonded - amount
    self.delegators[d].bonded = bonded
    if bonded == 0:
        self.delegators[d].delegate = empty(address)
        if o == d:
            self.orchestrators[d].registered = False  # leaves the active set below
    self._remove_stake(o, amount)
    lock_id: uint256 = self.delegators[d].nextLockId
    self.delegators[d].nextLockId = lock_id + 1
    when: uint256 = staticcall Rounds(self.rounds).currentRound() + self.unbondingPeriod
    self.locks[d][lock_id] = UnbondingLock(amount=amount, withdrawRound=when)
    log Unbond(delegator=d, orchestrator=o, amount=amount, bonded=bonded, lockId=lock_id, withdrawRound=when)
    return lock_id


@internal
def _take_lock(d: address, lock_id: uint256) -> uint256:
    amount: uint256 = self.locks[d][lock_id].amount
    assert amount > 0, "no such unbonding lock"
    self.locks[d][lock_id] = empty(UnbondingLock)
    return amount


@external
def rebond(lock_id: uint256):
    """Return an unbonding lock to the current bond."""
    self._fix_round()
    d: address = msg.sender
    self._claim(d)
    o: address = self.delegators[d].delegate
    assert o != empty(address), "not bonded: use rebondFromUnbonded"
    amount: uint256 = self._take_lock(d, lock_id)
    bonded: uint256 = self.delegators[d].bonded + amount
    self.delegators[d].bonded = bonded
    self._add_stake(o, amount)
    log Rebond(delegator=d, orchestrator=o, amount=amount, bonded=bonded, lockId=lock_id)


@external
def rebondFromUnbonded(to: address, lock_id: uint256):
    """Bond an unbonding lock to `to` after the whole stake was unbonded."""
    self._fix_round()
    d: address = msg.sender
    assert self.delegators[d].delegate == empty(address), "still bonded: use rebond"
    assert to == d or self.orchestrators[to].registered, "orchestrator is not registered"
    amount: uint256 = self._take_lock(d, lock_id)
    self.delegators[d].delegate = to
    self.delegators[d].bonded = amount
    self._checkpoint(d, to)
    self._add_stake(to, amount)
    log Rebond(delegator=d, orchestrator=to, amount=amount, bonded=amount, lockId=lock_id)


@external
def withdrawStake(lock_id: uint256):
    d: address = msg.sender
    when: uint256 = self.locks[d][lock_id].withdrawRound
    assert self.locks[d][lock_id].amount > 0, "no such unbonding lock"
    assert when <= staticcall Rounds(self.rounds).currentRound(), "unbonding period has not passed"
    amount: uint256 = self._take_lock(d, lock_id)
    assert extcall Token(self.token).transfer(d, amount), "token transfer failed"
    log WithdrawStake(delegator=d, lockId=lock_id, amount=amount)


@external
def withdrawFees():
    d: address = msg.sender
    self._claim(d)
    fees: uint256 = self.delegators[d].fees
    assert fees > 0, "no fees to withdraw"
    self.delegators[d].fees = 0
    send(d, fees)
    log WithdrawFees(delegator=d, amount=fees)


# -- views ---------------------------------------------------------------------------------

@view
@external
def pendingStake(d: address) -> uint256:
    bonded: uint256 = 0
    fees: uint256 = 0
    bonded, fees = self._pending(d)
    return bonded


@view
@external
def pendingFees(d: address) -> uint256:
    bonded: uint256 = 0
    fees: uint256 = 0
    bonded, fees = self._pending(d)
    return fees


@view
@external
def isActive(o: address) -> bool:
    """Whether `o` is active in the current round (may call `reward()`)."""
    return self._active_in(o, self._round())


@view
@external
def inPool(o: address) -> bool:
    """Whether `o` is in the pool: active from the next round on."""
    return self.activeIndex[o] != 0


@view
@external
def roundStake(o: address) -> uint256:
    """`o`'s stake as it stood when the current round started: what its reward is computed on."""
    return self._stake_at(o, self._round())


@view
@external
def activeCount() -> uint256:
    return len(self.active)
