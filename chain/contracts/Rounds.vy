# pragma version ~=0.4.3
"""
@title castnet rounds
@notice Rounds are fixed runs of blocks. Initializing a round records the hash of the block
        before it started, the value tickets commit to (creationRoundBlockHash), and has the
        bonding contract fix the round's active stake, inflation and mintable tokens.
"""

interface Bonding:
    def initializeRound(): nonpayable

event NewRound:
    round: indexed(uint256)
    blockHash: bytes32

roundLength: public(uint256)
lastInitializedRound: public(uint256)
blockHashForRound: public(HashMap[uint256, bytes32])
bonding: public(address)
deployer: address


@deploy
def __init__(round_length: uint256):
    assert round_length > 0, "round length must be positive"
    self.roundLength = round_length
    self.deployer = msg.sender


@external
def setBonding(bonding: address):
    """Wire the bonding contract, once, by the deployer."""
    assert msg.sender == self.deployer, "only the deployer"
    assert self.bonding == empty(address), "bonding already set"
    self.bonding = bonding


@view
@external
def currentRound() -> uint256:
    return block.number // self.roundLength


@view
@external
def currentRoundStartBlock() -> uint256:
    return block.number // self.roundLength * self.roundLength


@view
@external
def currentRoundInitialized() -> bool:
    return self.lastInitializedRound == block.number // self.roundLength


@view
@external
def ticketRound(creation_round: uint256) -> (uint256, bool, bytes32):
    """What a redemption checks, in one call: the current round, whether it is initialized,
    and the block hash recorded for the ticket's creation round."""
    current: uint256 = block.number // self.roundLength
    return current, self.lastInitializedRound == current, self.blockHashForRound[creation_round]


@external
def initializeRound():
    current: uint256 = block.number // self.roundLength
    assert self.lastInitializedRound < current, "round already initialized"
    start: uint256 = current * self.roundLength
    # the block before the round's first one; the genesis round has none
    hash: bytes32 = empty(bytes32)
    if start > 0:
        hash = blockhash(start - 1)
    self.lastInitializedRound = current
    self.blockHashForRound[current] = hash
    log NewRound(round=current, blockHash=hash)
    if self.bonding != empty(address):
        extcall Bonding(self.bonding).initializeRound()
