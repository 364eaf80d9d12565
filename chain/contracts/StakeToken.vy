# pragma version ~=0.4.3
"""
@title castnet stake token
@notice An ERC-20 token. The deployer receives the genesis supply; after that only the minter
        (the bonding contract, set once by the owner) can create tokens, as round rewards.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(String[32])
symbol: public(String[8])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
owner: public(address)
minter: public(address)


@deploy
def __init__(genesis_supply: uint256):
    self.name = "castnet stake"
    self.symbol = "CAST"
    self.decimals = 18
    self.owner = msg.sender
    self.totalSupply = genesis_supply
    self.balanceOf[msg.sender] = genesis_supply
    log Transfer(sender=empty(address), receiver=msg.sender, value=genesis_supply)


@external
def setMinter(minter: address):
    assert msg.sender == self.owner, "only the owner"
    assert self.minter == empty(address), "minter already set"
    assert minter != empty(address), "minter is the null address"
    self.minter = minter


@external
def mint(receiver: address, amount: uint256):
    assert msg.sender == self.minter, "only the minter"
    self.totalSupply += amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "transfer to the null address"
    assert self.balanceOf[sender] >= amount, "transfer amount exceeds balance"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "transfer amount exceeds allowance"
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True
