"""Verification by policy: cheap checks (no decoding) on every segment, the full decode-and-score
check on each orchestrator's first segments, after any failed check and on a drawn share of the
rest; a failed check suspends the orchestrator and redoes elsewhere the segments of the job that
passed only the cheap checks. Real encodes, real libp2p hosts on 127.0.0.1, the embedded EVM."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path

import pytest

from chain.client import ProtocolParams
from media.hls import rendition_dir, segment_file
from media.profiles import MIN_BITRATE, parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from media.verify import Claim, cheap_verdicts, verify_renditions
from node.chain_ledger import ChainLedger
from node.config import ConfigError, load_config
from node.gateway.role import GatewayConfig
from node.gateway.verify_policy import FIRST_FULL, VerifyPolicy
from node.local.network import Network, default_plan, key_for, open_network
from tests.media_fixtures import video_file

PROFILES = "144p"
EV = Fraction(10**12)
CHEAT, HONEST = b"\x01" * 20, b"\x02" * 20


def test_all_checks_every_segment_in_full() -> None:
    policy = VerifyPolicy("all", Fraction(0))
    assert all(policy.full_check(CHEAT) for _ in range(50))
    assert policy.counts(CHEAT) == (50, 50)


def test_sample_checks_first_segments_and_after_a_failure_in_full() -> None:
    policy = VerifyPolicy("sample", Fraction(0))  # nothing drawn: only the rules apply
    first = [policy.full_check(CHEAT) for _ in range(FIRST_FULL)]
    later = [policy.full_check(CHEAT) for _ in range(30)]
    assert first == [True] * FIRST_FULL and not any(later)
    # each orchestrator has its own first segments
    assert [policy.full_check(HONEST) for _ in range(FIRST_FULL + 1)] == [True, True, False]
    policy.failed(CHEAT)
    assert policy.distrusted(CHEAT) and not policy.distrusted(HONEST)
    assert all(policy.full_check(CHEAT) for _ in range(20))
    assert not policy.full_check(HONEST)


def test_sample_draws_from_the_os_randomness_per_segment() -> None:
    policy = VerifyPolicy("sample", Fraction(1, 2))
    draws = [policy.full_check(CHEAT) for _ in range(FIRST_FULL + 200)][FIRST_FULL:]
    # both outcomes occur (the chance that 200 fair draws agree is 2^-199)
    assert any(draws) and not all(draws)
    assert VerifyPolicy("sample", Fraction(1)).full_check(HONEST)


@pytest.mark.parametrize(("policy", "fraction"), [("some", 0.5), ("sample", 1.5), ("all", -1)])
def test_bad_policy_is_refused(policy: str, fraction: float) -> None:
    with pytest.raises(ValueError, match="verify"):
        VerifyPolicy(policy, fraction)


def test_cheap_checks_catch_structure_not_pictures() -> None:
    clip = video_file("policy.mp4", size="256x144", duration=4.0, gop=60)
    seg = list(segment(clip))[1]
    ladder = parse_profiles("144p,72p:100k")
    right = transcode(seg.data, ladder, preset="ultrafast").renditions
    claims = [(r.data, Claim.of(r), r.name) for r in right]
    assert all(v.ok for v in cheap_verdicts(claims, seg.data))
    # renditions handed in as each other's rungs: wrong sizes, caught without decoding
    swapped = [(claims[1][0], claims[0][1], claims[0][2]), (claims[0][0], *claims[1][1:])]
    reasons = [" ".join(v.reasons) for v in cheap_verdicts(swapped, seg.data)]
    assert all("resolution" in r for r in reasons), reasons
    # half a rendition: frames and timestamps missing
    (cut,) = cheap_verdicts([(claims[0][0][: len(claims[0][0]) // 2], *claims[0][1:])], seg.data)
    assert not cut.ok and any(r.startswith(("claim", "frames", "timing")) for r in cut.reasons)
    # the right structure with starved pictures passes the cheap checks; the full check fails it
    starved_ladder = tuple(dataclasses.replace(p, bitrate=MIN_BITRATE) for p in ladder)
    starved = transcode(seg.data, starved_ladder, preset="ultrafast").renditions
    starved_claims = [(r.data, Claim.of(r), r.name) for r in starved]
    assert all(v.ok for v in cheap_verdicts(starved_claims, seg.data))
    assert not any(v.ok for v in verify_renditions(starved_claims, seg.data))


@asynccontextmanager
async def network(
    tmp_path: Path, faults: tuple[str, ...], gateway: GatewayConfig, cheat_capacity: int = 1
) -> AsyncIterator[Network]:
    plan = default_plan(2, gateway, faults, ticket_ev=EV, capacity=1)
    cheat = plan.orchestrators[0]  # the cheapest: tried first
    cheat = dataclasses.replace(
        cheat, config=dataclasses.replace(cheat.config, capacity=cheat_capacity)
    )
    plan = dataclasses.replace(plan, orchestrators=(cheat, *plan.orchestrators[1:]))
    names = ["gateway", "delegator", "orchestrator0", "orchestrator1"]
    ledger = ChainLedger.embedded([key_for(plan.seed, n) for n in names],
                                  ProtocolParams(round_length=50, pool_size=2))  # fmt: skip
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        assert await net.gateway.wait_for_offers(2, 90.0) == 2
        yield net


def _config() -> GatewayConfig:
    """The default verify policy, on a small ladder."""
    return GatewayConfig(profiles=PROFILES, preset="ultrafast", job_timeout_s=120.0,
                         max_price_per_pixel=Fraction(10**4), max_ev=4 * EV)  # fmt: skip


def _output_verified(out: Path, clip: Path) -> list[str]:
    """Every written rendition fully checked against its source segment: the problems found."""
    problems = []
    for seg in segment(clip):
        data = (out / rendition_dir(PROFILES) / segment_file(seg.seq)).read_bytes()
        rung = transcode(seg.data, parse_profiles(PROFILES), preset="ultrafast").renditions[0]
        claim = Claim(rung.width, rung.height, rung.frame_count, rung.pixel_count,
                      rung.frame_rate)  # fmt: skip
        (verdict,) = verify_renditions([(data, claim, PROFILES)], seg.data)
        problems += [f"{seg.seq}: {r}" for r in verdict.reasons]
    return problems


async def test_wrong_renditions_are_caught_on_the_first_segment_by_default(
    tmp_path: Path,
) -> None:
    clip = video_file("policy.mp4", size="256x144", duration=6.0, gop=60)
    assert GatewayConfig().verify == "sample"
    async with network(tmp_path, ("wrong-renditions", ""), _config()) as net:
        cheat, honest = net.orchestrators
        report = await net.gateway.transcode_file(clip, tmp_path / "out")
        assert all(o.result is not None for o in report.segments)
        assert {o.orchestrator for o in report.segments} == {honest.address}
        theirs = [v for v in net.gateway.verdicts if v.orchestrator == cheat.address]
        assert theirs and not any(v.accepted for v in theirs)
        assert cheat.address in net.gateway.selector.suspended(time.monotonic())
    assert _output_verified(tmp_path / "out", clip) == []


async def test_a_cheat_found_by_a_sampled_check_has_its_unchecked_segments_redone(
    tmp_path: Path,
) -> None:
    """The cheat is honest on its first 2 segments (checked in full), starves the pictures from
    its 3rd (right sizes, frames and timestamps: the cheap checks pass). Its 3rd result is not
    drawn for the full check and is accepted; its 4th is drawn and fails: the cheat is suspended
    and its 3rd segment is redone by the honest one before the job's output is written."""
    clip = video_file("policy-long.mp4", size="256x144", duration=20.0, gop=60)
    draw: Callable[[bytes, int], bool] = lambda orch, index: index != FIRST_FULL  # noqa: E731
    # capacity 1: the cheat computes one segment at a time, so its results reach the gateway (and
    # the policy's count) in the order it computed them
    async with network(tmp_path, ("starve-after-2", ""), _config()) as net:
        cheat, honest = net.orchestrators
        net.gateway.verify_policy = VerifyPolicy("sample", Fraction(1, 8), draw=draw)
        report = await net.gateway.transcode_file(clip, tmp_path / "out")
        assert all(o.result is not None for o in report.segments)
        policy = net.gateway.verify_policy
        assert policy.distrusted(cheat.address) and not policy.distrusted(honest.address)
        assert cheat.address in net.gateway.selector.suspended(time.monotonic())
        redone = [o for o in report.segments if any("redone" in e for e in o.errors)]
        assert redone and all(o.orchestrator == honest.address for o in redone)
        rejected = [v for v in net.gateway.verdicts
                    if v.orchestrator == cheat.address and not v.accepted]  # fmt: skip
        found = [v.reason for v in rejected if "quality" in v.reason or "content" in v.reason]
        assert found, [v.reason for v in rejected]
        # the cheat's segments left in the output were all checked in full (its honest ones: with
        # segments staged and in flight, more than its first two may be computed honestly)
        kept = [o for o in report.segments if o.orchestrator == cheat.address]
        assert all(o.full_check for o in kept), [o.seq for o in kept if not o.full_check]
    assert _output_verified(tmp_path / "out", clip) == []


def test_config_takes_the_policy_and_refuses_bad_values(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    base = 'roles = ["gateway"]\ndata_dir = "data"\n[ledger]\nkind = "embedded"\n[gateway]\n'
    conf.write_text(base)
    default = load_config(conf).gateway
    assert (default.verify, default.verify_fraction) == ("sample", Fraction(1, 8))
    conf.write_text(base + 'verify = "all"\nverify_fraction = "1/4"\n')
    chosen = load_config(conf).gateway
    assert (chosen.verify, chosen.verify_fraction) == ("all", Fraction(1, 4))
    # the command line's --verify overrides the file
    assert load_config(conf, {"gateway": {"verify": "sample"}}).gateway.verify == "sample"
    for bad, message in (('verify = "some"', "gateway.verify"),
                         ("verify_fraction = 2", "gateway.verify_fraction")):  # fmt: skip
        conf.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config(conf)
