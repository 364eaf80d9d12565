"""Prometheus metrics of a running node (gateway + orchestrator roles in one process, real libp2p
on 127.0.0.1, real encodes, the fake chain): after a job, `GET /metrics` on the metrics-only
listener shows the segments, tickets and gossip the job caused, consistent with the API's own
numbers, and the families survive a restart because they follow the log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from api_client import request, request_json, upload, wait_job
from conftest import key
from prometheus_client.parser import text_string_to_metric_families

from node.config import ConfigError, build_config
from node.local.demo import generate_clip
from node.service import NodeService

PROFILES = "144p"


@asynccontextmanager
async def service(tmp_path: Path) -> AsyncIterator[tuple[NodeService, str, str]]:
    raw = {
        "roles": ["gateway", "orchestrator"],
        "data_dir": "data",
        "p2p": {"network": "metrics-test"},
        "ledger": {"kind": "embedded"},
        "gateway": {"profiles": PROFILES},
        "orchestrator": {"ticket_ev": "1e9", "redeem_interval_s": 0.5},
        "api": {"listen": "127.0.0.1:0", "require_token": False},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    config = build_config(raw, tmp_path)
    keys = {"gateway": key(21), "orchestrator": key(22)}
    async with trio.open_nursery() as nursery:
        svc: NodeService = await nursery.start(NodeService(config, keys).run)
        assert svc.api_address is not None and svc.metrics_address is not None
        api = "http://{}:{}".format(*svc.api_address)
        metrics = "http://{}:{}".format(*svc.metrics_address)
        yield svc, api, metrics
        nursery.cancel_scope.cancel()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base: str) -> Samples:
    status, body = await trio.to_thread.run_sync(lambda: request(base, "GET", "/metrics"))
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_after_a_job(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    async with service(tmp_path) as (svc, api, metrics):
        assert svc.status()["metrics"] == metrics + "/metrics"
        before = await scrape(metrics)
        assert value(before, "castnet_segment_source_appeared_total", pipeline="transcode") == 0
        assert value(before, "castnet_gossip_peers", role="gateway") >= 1

        job = await trio.to_thread.run_sync(lambda: upload(api, clip.read_bytes(), PROFILES))
        record = await wait_job(api, job["id"], 90)
        assert record["status"] == "done", record
        segments = record["progress"]["segments_total"]
        assert segments == 2

        after = await scrape(metrics)
        assert value(await scrape(api), "castnet_tickets_sent_total") > 0  # the API serves it too
        _, status = await trio.to_thread.run_sync(lambda: request_json(api, "GET", "/v1/status"))
        t = "transcode"
        assert value(after, "castnet_segment_source_appeared_total", pipeline=t) == segments
        assert value(after, "castnet_segment_transcoded_total", pipeline=t) == segments
        assert value(after, "castnet_transcode_overall_latency_seconds_count",
                     pipeline=t) == segments  # fmt: skip
        assert value(after, "castnet_transcode_overall_latency_seconds_sum", pipeline=t) > 0
        # every verified segment was computed by our orchestrator and paid with tickets
        assert value(after, "castnet_transcode_time_seconds_count") >= segments
        assert value(after, "castnet_pixels_processed_total") > 0
        sent = value(after, "castnet_tickets_sent_total")
        assert sent >= segments
        assert value(after, "castnet_tickets_received_total") == sent
        assert value(after, "castnet_ticket_value_sent_wei_total") > 0
        assert (
            value(after, "castnet_orchestrator_segments_total", outcome="done")
            == (status["orchestrator"]["jobs"])
        )
        assert (
            value(after, "castnet_winning_tickets_received_total")
            == (status["orchestrator"]["won"])
        )
        # gossip and the log, per role, as /v1/status counts them
        for role in ("gateway", "orchestrator"):
            assert value(after, "castnet_gossip_messages_published_total", role=role) > 0
            assert value(after, "castnet_gossip_peers", role=role) >= 1
            assert value(after, "castnet_gossip_mesh_peers", role=role) >= 1
            # the two roles know no third peer: peer exchange found none to dial
            assert value(after, "castnet_peer_exchange_dialed_total", role=role) == 0
            assert (
                value(after, "castnet_log_events", role=role) >= (status["roles"][role]["events"])
            )
            assert value(after, "castnet_log_append_seconds_count", role=role) > 0
            assert value(after, "castnet_log_store_failures_total", role=role) == 0
        assert value(after, "castnet_jobs", kind="transcode", status="done") == 1
        assert value(after, "castnet_sessions") == 0
        assert value(after, "castnet_chain_block") > 0
        assert value(after, "castnet_gateway_deposit_wei") > 0

        status_code, body = await trio.to_thread.run_sync(
            lambda: request_json(metrics, "GET", "/nowhere")
        )
        assert status_code == 404 and body["error"] == "not_found"
        status_code, body = await trio.to_thread.run_sync(
            lambda: request_json(metrics, "POST", "/metrics", body=b"")
        )
        assert status_code == 405 and body["error"] == "method_not_allowed"

    # the counters are the log's: a restarted node shows the same history
    async with service(tmp_path) as (_svc, _api, metrics):
        again = await scrape(metrics)
        for name, labels in [
            ("castnet_segment_transcoded_total", {"pipeline": "transcode"}),
            ("castnet_tickets_sent_total", {}),
            ("castnet_tickets_received_total", {}),
            ("castnet_pixels_processed_total", {}),
        ]:
            assert value(again, name, **labels) == value(after, name, **labels), name


def test_metrics_listen_is_checked(tmp_path: Path) -> None:
    base: dict[str, Any] = {"roles": ["orchestrator"], "data_dir": "d"}
    assert build_config(base, tmp_path).metrics.listen is None
    config = build_config({**base, "metrics": {"listen": "127.0.0.1:9464"}}, tmp_path)
    assert config.metrics.listen == ("127.0.0.1", 9464)
    for bad in ("9464", "127.0.0.1:99999", 9464):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            build_config({**base, "metrics": {"listen": bad}}, tmp_path)
    with pytest.raises(ConfigError, match="metrics"):
        build_config({**base, "metrics": {"port": 1}}, tmp_path)
