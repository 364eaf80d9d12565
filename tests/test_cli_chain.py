"""`castnet chain|stake|deposit` against a real anvil: a deployment, an operator who self-bonds,
registers and claims rewards, a delegator whose bond grows and whose unbonding lock is refused
before its period and paid after it, a gateway's deposit and reserve, and one clear line with
exit code 2 for every bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from chain.anvil import Anvil, free_port
from chain.client import Chain
from chain.watcher import ChainWatcher, WatchConfig
from events.crypto import to_checksum
from events.fold import delegated_stake
from node.amounts import AmountError, parse_amount, parse_percent, units
from node.cli.main import main
from node.keystore import create_keystore
from tests.test_chain_watcher import Observer

ROUND = 5  # blocks per round of these deployments
CAST = 10**18
PASSWORD = "correct horse"


class Cli:
    """Runs `castnet` in-process against one deployment; returns (code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], contracts: Path, password: Path):
        self.capsys, self.contracts, self.password = capsys, contracts, password

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def signed(self, keystore: Path, *argv: str) -> tuple[int, str, str]:
        return self(*argv, "--contracts", str(self.contracts), "--keystore", str(keystore),
                    "--password-file", str(self.password))  # fmt: skip

    def json(self, *argv: str) -> dict[str, Any]:
        code, out, err = self(*argv, "--contracts", str(self.contracts), "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture(scope="module")
def deployment(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chain") / "contracts.json"
    periods = ["--round-length", str(ROUND), "--unbonding-rounds", "2", "--unlock-rounds", "2"]
    code = main(["chain", "deploy", "--rpc", anvil.url, "--out", str(path), "--dev", *periods])
    assert code == 0
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], deployment: Path, tmp_path: Path) -> Cli:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    return Cli(capsys, deployment, password)


def account(cli: Cli, tmp_path: Path, name: str, eth: str = "10eth", tokens: str = "0cast") -> Path:
    """A new keystore funded from the dev account by `castnet chain fund-account`."""
    keystore = tmp_path / f"{name}.json"
    address = create_keystore(keystore, PASSWORD, kdf="pbkdf2", work=1024)
    grant = ["--eth", eth, "--tokens", tokens, "--contracts", str(cli.contracts), "--dev"]
    code, _out, err = cli("chain", "fund-account", to_checksum(address), *grant)
    assert code == 0, err
    return keystore


def mine_rounds(anvil: Anvil, rounds: int) -> None:
    """Mine `rounds` rounds ahead, to a round's first block: the calls that follow land in the
    same round."""
    chain = Chain.rpc(anvil.url, anvil.dev_key)
    block = chain.block_number()
    chain.mine((block // ROUND + rounds) * ROUND - block)


def test_deploy_writes_the_deployment_that_status_reads(cli: Cli, anvil: Anvil) -> None:
    document = json.loads(cli.contracts.read_text())
    assert set(document) >= {"chain_id", "rpc", "contracts", "params", "deployed_block"}
    assert document["rpc"] == anvil.url and document["chain_id"] == 31337
    assert set(document["contracts"]) == {"Rounds", "TicketBroker", "StakeToken", "Bonding"}
    assert document["params"]["round_length"] == ROUND
    status = cli.json("chain", "status")
    assert status["contracts"] == document["contracts"]
    assert status["block"] >= document["deployed_block"] and status["pool_size"] == 1
    code, out, _err = cli("chain", "init-round", "--contracts", str(cli.contracts), "--dev")
    assert code == 0 and "initialized" in out
    assert cli.json("chain", "status")["round_initialized"]
    code, _out, err = cli("chain", "deploy", "--rpc", anvil.url, "--out", str(cli.contracts),
                          "--dev")  # fmt: skip
    assert code == 2 and "exists: pass --force" in err


def test_operator_and_delegator_earn_unbond_and_withdraw(
    cli: Cli, anvil: Anvil, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="castnet.chain")
    operator = account(cli, tmp_path, "operator", tokens="1000cast")
    delegator = account(cli, tmp_path, "delegator", tokens="100cast")
    op = json.loads(operator.read_text())["address"]
    orch = to_checksum(bytes.fromhex(op))

    code, out, err = cli.signed(operator, "stake", "bond", "100cast")
    assert code == 0 and "bonded now 100 CAST" in out, err
    code, out, err = cli.signed(operator, "stake", "register", "--reward-cut", "10%",
                                "--fee-share", "50")  # fmt: skip
    assert code == 0 and "reward cut 10%, fee share 50%" in out, err
    assert "active from the next round" in out
    assert any("register: tx 0x" in r.message and "gas used" in r.message for r in caplog.records)
    active = {o["address"]: o for o in cli.json("chain", "status")["active"]}
    assert active[orch]["stake"] == 100 * CAST and active[orch]["reward_cut_ppm"] == 100_000

    code, _out, err = cli.signed(delegator, "stake", "delegate", "50cast", "--to", orch)
    assert code == 0, err
    mine_rounds(anvil, 1)
    code, out, err = cli.signed(operator, "stake", "reward")
    assert code == 0 and "rewarded in round" in out, err
    code, _out, err = cli.signed(operator, "stake", "reward")
    assert code == 2 and "already rewarded in this round" in err

    mine = cli.json("stake", "status", "--keystore", str(delegator))
    assert mine["delegate"] == orch and mine["bonded"] > 50 * CAST and mine["tokens"] == 50 * CAST
    theirs = cli.json("stake", "status", orch)["orchestrator"]
    assert theirs["registered"] and theirs["active"] and theirs["stake"] > 150 * CAST

    code, out, err = cli.signed(delegator, "stake", "unbond", "10cast")
    assert code == 0 and "lock 0" in out, err
    code, _out, err = cli.signed(delegator, "stake", "withdraw", "0")
    assert code == 2 and "unbonding period has not passed" in err
    assert "withdrawable from round" in err and len(err.strip().splitlines()) == 1
    (lock,) = cli.json("stake", "status", "--keystore", str(delegator))["locks"]
    assert not lock["withdrawable"]
    code, out, _err = cli("stake", "status", "--keystore", str(delegator), "--contracts",
                          str(cli.contracts))  # fmt: skip
    assert code == 0 and f"to {orch}" in out and "lock 0: 10 CAST, withdrawable from round" in out
    mine_rounds(anvil, 2)
    assert cli.json("stake", "status", "--keystore", str(delegator))["locks"][0]["withdrawable"]
    code, out, err = cli.signed(delegator, "stake", "withdraw", "0")
    assert code == 0 and "withdrew lock 0: 10 CAST" in out, err
    assert cli.json("stake", "status", "--keystore", str(delegator))["tokens"] == 60 * CAST

    code, out, _err = cli.signed(delegator, "stake", "unbond", "5cast")
    assert code == 0 and "lock 1" in out
    before = cli.json("stake", "status", "--keystore", str(delegator))["bonded"]
    code, out, err = cli.signed(delegator, "stake", "rebond", "1")
    assert code == 0 and f"to {orch}" in out, err
    bonded = cli.json("stake", "status", "--keystore", str(delegator))["bonded"]
    assert bonded >= before + 5 * CAST
    code, _out, err = cli.signed(delegator, "stake", "withdraw-fees")
    assert code == 2 and "no fees to withdraw" in err

    code, out, err = cli.signed(
        delegator, "stake", "unbond", f"{bonded}wei"
    )  # all of it, to the wei
    assert code == 0 and "lock 2" in out, err
    code, _out, err = cli.signed(delegator, "stake", "rebond", "2")
    assert code == 2 and "not bonded any more: name the orchestrator with --to" in err
    code, out, err = cli.signed(delegator, "stake", "rebond", "2", "--to", orch)
    assert code == 0 and f"to {orch}; bonded now" in out, err
    assert cli.json("stake", "status", "--keystore", str(delegator))["delegate"] == orch


def test_deposit_fund_reserve_unlock_and_withdraw(cli: Cli, anvil: Anvil, tmp_path: Path) -> None:
    gateway = account(cli, tmp_path, "gateway", eth="5eth")
    assert cli.signed(gateway, "deposit", "fund", "1eth")[0] == 0
    assert cli.signed(gateway, "deposit", "reserve", "0.5eth")[0] == 0
    funds = cli.json("deposit", "status", "--keystore", str(gateway))
    assert (funds["deposit"], funds["reserve"], funds["withdraw_round"]) == (CAST, CAST // 2, None)

    code, _out, err = cli.signed(gateway, "deposit", "withdraw")
    assert code == 2 and "sender is not unlocking" in err and "deposit unlock" in err
    code, out, err = cli.signed(gateway, "deposit", "unlock")
    assert code == 0 and "withdrawable from round" in out, err
    assert cli.signed(gateway, "deposit", "cancel-unlock")[0] == 0
    assert cli.json("deposit", "status", "--keystore", str(gateway))["withdraw_round"] is None
    assert cli.signed(gateway, "deposit", "unlock")[0] == 0
    code, _out, err = cli.signed(gateway, "deposit", "withdraw")
    assert code == 2 and "account is locked" in err
    mine_rounds(anvil, 2)
    code, out, err = cli.signed(gateway, "deposit", "withdraw")
    assert code == 0 and "withdrew 1.5 ETH" in out, err
    funds = cli.json("deposit", "status", "--keystore", str(gateway))
    assert funds["deposit"] == funds["reserve"] == 0 and funds["eth"] > 4 * CAST


def test_bad_inputs_are_one_line_and_exit_2(cli: Cli, anvil: Anvil, tmp_path: Path) -> None:
    keystore = tmp_path / "k.json"
    create_keystore(keystore, PASSWORD, kdf="pbkdf2", work=1024)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password")
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    elsewhere = tmp_path / "elsewhere.json"
    fake = {name: "0x" + f"{i + 1:040x}" for i, name in
            enumerate(("Rounds", "TicketBroker", "StakeToken", "Bonding"))}  # fmt: skip
    elsewhere.write_text(json.dumps({"chain_id": 31337, "rpc": anvil.url, "contracts": fake}))
    other_chain = tmp_path / "other.json"
    other_chain.write_text(json.dumps({**json.loads(cli.contracts.read_text()), "chain_id": 5}))
    dead = f"http://127.0.0.1:{free_port()}"
    c = str(cli.contracts)
    cases = [
        (("stake", "bond", "1.5.3cast", "--contracts", c, "--dev"), "bad amount '1.5.3cast'"),
        (("deposit", "fund", "1.0000000000000000001eth", "--contracts", c, "--dev"),
         "finer than one wei"),
        (("deposit", "fund", "0eth", "--contracts", c, "--dev"), "must be more than zero"),
        (("deposit", "fund", "2", "--contracts", c, "--dev"), "give a unit, like 2eth (or 2wei)"),
        (("stake", "bond", "500", "--contracts", c, "--dev"), "give a unit, like 500cast"),
        (("chain", "fund-account", "0x" + "11" * 20, "--eth", "10", "--contracts", c, "--dev"),
         "bad --eth '10': give a unit, like 10eth"),
        (("chain", "fund-account", "0x" + "11" * 20, "--tokens", "1.5", "--contracts", c,
          "--dev"), "bad --tokens '1.5': give a unit, like 1.5cast"),
        (("stake", "register", "--reward-cut", "150%", "--fee-share", "5", "--contracts", c,
          "--dev"), "a percentage from 0 to 100"),
        (("stake", "delegate", "1cast", "--to", "0x12", "--contracts", c, "--dev"),
         "bad --to"),
        (("chain", "status", "--contracts", c, "--rpc", dead), f"cannot reach the chain at {dead}"),
        (("chain", "deploy", "--rpc", dead, "--out", str(tmp_path / "x.json"), "--dev"),
         "cannot reach the chain"),
        (("chain", "status", "--contracts", str(tmp_path / "missing.json")),
         "no such deployment file"),
        (("chain", "status", "--contracts", str(garbled)), "not a castnet deployment file"),
        (("deposit", "status", "--contracts", str(elsewhere), "--dev"), "no Rounds contract at"),
        (("chain", "status", "--contracts", str(other_chain)), "is a deployment on chain 5"),
        (("stake", "reward", "--contracts", c, "--keystore", str(keystore), "--password-file",
          str(wrong)), "wrong password"),
        (("stake", "reward", "--contracts", c), "--keystore FILE or --dev"),
        (("stake", "withdraw", "7", "--contracts", c, "--dev"), "no unbonding lock 7"),
        (("stake", "reward", "--contracts", c, "--keystore", str(keystore), "--password-file",
          str(cli.password)), "not a registered orchestrator"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = cli(*argv)
        assert code == 2, (argv, out, err)
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and not out


@pytest.mark.parametrize(
    ("text", "wei"),
    [("1000wei", 1000), ("1.5eth", 3 * CAST // 2), ("10cast", 10 * CAST), ("2 gwei", 2 * 10**9),
     (".5ETH", CAST // 2), ("1.0wei", 1), ("123456789012345678901.000000000000000001cast",
     123456789012345678901 * CAST + 1)],
)  # fmt: skip
def test_amounts_parse_exactly(text: str, wei: int) -> None:
    assert parse_amount(text) == wei


@pytest.mark.parametrize("text", ["", "-1", "1e18", "1.5", "1..5eth", "0x10", "5 btc", "0"])
def test_amounts_refuse_what_is_not_one(text: str) -> None:
    with pytest.raises(AmountError, match="bad amount"):
        parse_amount(text)


def test_percentages_and_units() -> None:
    assert [parse_percent(t) for t in ("10", "10%", "12.5 %", "0", "100")] == [
        100_000, 100_000, 125_000, 0, 1_000_000]  # fmt: skip
    for text in ("101", "-5", "0.00001", "ten"):
        with pytest.raises(AmountError):
            parse_percent(text)
    assert units(0) == "0 CAST" and units(1) == "0.000000000000000001 CAST"
    assert units(10**27, "ETH") == "1000000000 ETH"


def test_the_fold_and_stake_status_agree_to_the_wei(cli: Cli, anvil: Anvil, tmp_path: Path) -> None:
    """Delegations followed from the contracts' logs stay exact after rewards: the fold's stake
    per delegator (cumulative factors, bonds counting from the next round) is what `stake status`
    reads from the contract."""
    operator = account(cli, tmp_path, "op2", tokens="1000cast")
    first = account(cli, tmp_path, "first", tokens="100cast")
    second = account(cli, tmp_path, "second", tokens="100cast")
    orch = to_checksum(bytes.fromhex(json.loads(operator.read_text())["address"]))
    document = json.loads(cli.contracts.read_text())
    chain = Chain.rpc(anvil.url, anvil.dev_key)
    config = WatchConfig(depth=0, start_block=document["deployed_block"])
    watcher = ChainWatcher(chain, document["contracts"], tmp_path / "cursor.json", config)
    observer = Observer()

    def ok(keystore: Path, *argv: str) -> None:
        code, _out, err = cli.signed(keystore, *argv)
        assert code == 0, err

    ok(operator, "stake", "bond", "100cast")
    ok(operator, "stake", "register", "--reward-cut", "10%", "--fee-share", "50")
    ok(first, "stake", "delegate", "50cast", "--to", orch)
    mine_rounds(anvil, 1)
    ok(operator, "stake", "reward")
    ok(second, "stake", "delegate", "30cast", "--to", orch)  # after the round's reward
    mine_rounds(anvil, 1)
    ok(second, "stake", "delegate", "10cast", "--to", orch)  # before it: earns nothing this round
    ok(operator, "stake", "reward")
    ok(first, "stake", "unbond", "5cast")
    mine_rounds(anvil, 1)
    ok(operator, "stake", "reward")
    mine_rounds(anvil, 1)
    ok(operator, "stake", "reward")
    chain.mine(1)
    observer.drain(watcher)
    state = observer.state()
    assert state.violation_list() == []
    for keystore in (operator, first, second):
        address = bytes.fromhex(json.loads(keystore.read_text())["address"])
        status = cli.json("stake", "status", "--keystore", str(keystore))
        assert delegated_stake(state, address) == status["bonded"] > 0
    # the first delegator's 45 CAST earned in the rounds after it bonded; the second's bond
    # grew only from the round after its last change
    first_status = cli.json("stake", "status", "--keystore", str(first))
    assert first_status["bonded"] > 45 * CAST
