"""A node's configuration: one frozen `NodeConfig` built from a TOML file and command-line
overrides (both as nested dicts in the file's shape, merged, then validated once), passed down.
This module holds the sections and their parsing; the `[api]`/`[metrics]` sections are in
node.config_api, the value parsers (numbers, wei, paths, peer ids, ...) in node.config_values.

```toml
roles = ["gateway", "orchestrator"]   # any of gateway, orchestrator, delegator
data_dir = "node-data"                # relative paths are relative to this file
[p2p]
network = "castnet-dev"
listen = ["/ip4/127.0.0.1/tcp/0"]     # the n-th role of a process listens on port + n
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/16Uiu2..."]
require_bootstrap = true              # refuse to start when no bootstrap peer answers
peers = 4                             # a gossip mesh short of this many peers (none left
                                      #   to graft): ask connected peers for more and dial
                                      #   them (peer exchange); 0: only the bootstrap peers
                                      #   and those that dial in
max_peers = 64                        # above this many connections, close idle ones outside
                                      #   the gossip mesh down to 3/4 of it; 0: keep all
inbound_per_ip = 8                    # inbound connections one IP address may hold at once
                                      #   (loopback is not limited); 0: no limit
admit = "standing"                    # store and forward only the events of authors with
                                      #   standing (README: Admission); "open" admits every
                                      #   author (a private LAN)
[ledger]
kind = "embedded"                     # required: "embedded" (in-process EVM with the protocol
                                      #   contracts, one process) or "rpc" (rpc_url + contracts)
deposit = "1e18"                      # wei, embedded: what our own gateway deposits at start
[orchestrator]
price_per_pixel = "1000"              # wei per output pixel, an int or "a/b"
capacity = 2
workers = ["16Uiu2..."]               # peer ids of `castnet worker`s that may attach
[gateway]
profiles = "360p,240p"
max_jobs = 4                          # file jobs run at once (sharing the orchestrators); the
                                      # rest wait in order of arrival; 1 = one after another
verify = "sample"                     # "all": decode and score every rendition of every segment;
                                      #   "sample": cheap checks on every segment, the full check
                                      #   on each orchestrator's first 2, after any failed check,
verify_fraction = "1/8"               #   and on this share of the rest, drawn per orchestrator
retention_days = 7                    # finished jobs (record, input, output) are deleted after
                                      # this many days, checked at start and hourly; 0 = never
keep_inputs = false                   # true keeps uploaded inputs until then; by default an
                                      # upload is deleted once its job has finished
summary_interval_s = 30.0             # seconds: verdicts are summarized network-wide (for
                                      #   reputation) at most this often, and at the end of
                                      #   each job, live stream, and run of the node
[api]
listen = "127.0.0.1:8935"             # HOST:PORT the HTTP API binds
# token / token_file: the bearer token every request must carry; without either the node
#   creates a random one in DATA_DIR/gateway/api-token (0600) on first start and prints it once
require_token = true                  # false (loopback listen only): no token at all
hosts = []                            # extra names accepted in the Host header
path_roots = []                       # JSON `path` inputs only under these folders (none: no path)
live_schemes = ["rtmp", "rtmps", "srt", "http", "https", "tcp", "udp"]
live_hosts = []                       # live URLs only to these hosts (empty: any public host)
live_allow_networks = []              # e.g. ["127.0.0.1/32"]: private/loopback/link-local ranges
                                      #   live URLs may reach (refused by default)
max_upload_bytes = 2147483648         # an upload above this is refused with 413
header_timeout_s = 10.0               # a connection must send a request's headers within this
body_timeout_s = 30.0                 # longest wait for the next piece of a request body
max_client_connections = 32           # open connections per client address
[metrics]
listen = "127.0.0.1:9464"             # a metrics-only listener (GET /metrics); off when unset
[delegator]
orchestrator = "0x..."
amount = "5e18"
[keys]
gateway = "gw.json"                   # default: DATA_DIR/ROLE/keystore.json
```"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from media.encoders import X264_PRESETS
from media.errors import MediaError
from media.profiles import parse_profiles
from node.config_api import ApiConfig, MetricsConfig, api_config, metrics_config
from node.config_values import (
    ConfigError,
    address,
    boolean,
    fraction,
    integer,
    number,
    parse_listen,
    path_value,
    peer_ids,
    share,
    strings,
    wei,
)
from node.gateway.job_book import MAX_JOBS, Retention
from node.gateway.verify_policy import POLICIES as VERIFY_POLICIES
from node.gateway.work import GatewayConfig
from node.orchestrator.settings import OrchestratorConfig
from node.protocol import SUMMARY_EVERY_S
from p2p.config import DEFAULT_NETWORK, INBOUND_PER_IP, MAX_PEERS, PEERS_TARGET, P2PConfig

# the sections' types and the value parsers stay importable from here, where callers found them
__all__ = ["ADMIT_MODES", "ADMIT_STANDING", "KEYSTORE_NAME", "LEDGER_KINDS", "ROLES",
           "VERIFY_POLICIES", "ApiConfig", "ConfigError", "DelegatorConfig", "LedgerConfig",
           "MetricsConfig", "NodeConfig", "build_config", "load_config", "merge", "parse_listen",
           "read_toml"]  # fmt: skip

ROLES = ("gateway", "orchestrator", "delegator")
LEDGER_KINDS = ("embedded", "rpc")
ADMIT_STANDING, ADMIT_OPEN = "standing", "open"
ADMIT_MODES = (ADMIT_STANDING, ADMIT_OPEN)
KEYSTORE_NAME = "keystore.json"

_SECTIONS: dict[str, set[str]] = {
    "": {"roles", "data_dir", "p2p", "ledger", "orchestrator", "gateway", "api", "delegator",
         "keys", "metrics"},
    "p2p": {"network", "listen", "bootstrap", "mdns", "require_bootstrap", "admit", "peers",
            "max_peers", "inbound_per_ip"},
    "ledger": {"kind", "rpc_url", "deposit", "reserve", "contracts"},
    "orchestrator": {"price_per_pixel", "capacity", "ticket_ev", "encoder", "offer_interval_s",
                     "validity_blocks", "redeem_interval_s", "workers", "allow_any_worker",
                     "worker_timeout_s"},
    "gateway": {"profiles", "preset", "max_price_per_pixel", "job_timeout_s", "suspend_s",
                "min_offers", "ai_recheck", "ai_models_dir", "retention_days", "keep_inputs",
                "max_jobs", "verify", "verify_fraction", "summary_interval_s"},
    "api": {"listen", "token", "token_file", "require_token", "hosts", "max_upload_bytes",
            "path_roots", "live_schemes", "live_hosts", "live_allow_networks", "header_timeout_s",
            "body_timeout_s", "max_client_connections", "enabled"},
    "delegator": {"orchestrator", "amount"},
    "metrics": {"listen"},
    "keys": set(ROLES),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    kind: str = ""  # "embedded" or "rpc"; empty: not configured (`castnet run` refuses)
    rpc_url: str = ""
    deposit: int = 10**18
    reserve: int = 10**18
    contracts: Path | None = None  # rpc: the deployment file `castnet chain deploy` wrote


@dataclass(frozen=True, slots=True)
class DelegatorConfig:
    orchestrator: bytes | None = None
    amount: int = 0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    roles: tuple[str, ...]
    data_dir: Path
    p2p: P2PConfig = field(default_factory=P2PConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    orchestrator: OrchestratorConfig = field(
        default_factory=lambda: OrchestratorConfig(price_per_pixel=Fraction(1000))
    )
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    delegator: DelegatorConfig = field(default_factory=DelegatorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    keys: Mapping[str, Path] = field(default_factory=dict)
    redeem_interval_s: float = 5.0
    min_offers: int = 1
    retention: Retention = field(default_factory=Retention)
    max_jobs: int = MAX_JOBS  # gateway.max_jobs

    def role_dir(self, role: str) -> Path:
        return self.data_dir / role

    def keystore(self, role: str) -> Path:
        return self.keys.get(role) or self.role_dir(role) / KEYSTORE_NAME


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, tables merged key by key; None values in `override` are skipped."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            below = out.get(key)
            out[key] = merge(below if isinstance(below, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Read `path` (optional), apply `overrides` (in the file's shape), validate."""
    raw = read_toml(path) if path is not None else {}
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    return build_config(merge(raw, overrides or {}), base)


def build_config(raw: Mapping[str, Any], base: Path) -> NodeConfig:
    _check_keys(raw, "")
    roles = _roles(raw.get("roles"))
    if "data_dir" not in raw:
        raise ConfigError("data_dir is required (in the config file or --data-dir)")
    data_dir = path_value(raw["data_dir"], base, "data_dir")
    p2p, ledger = _table(raw, "p2p"), _table(raw, "ledger")
    orch, gw = _table(raw, "orchestrator"), _table(raw, "gateway")
    api, dele, keys = _table(raw, "api"), _table(raw, "delegator"), _table(raw, "keys")
    config = NodeConfig(
        roles=roles,
        data_dir=data_dir,
        p2p=_p2p(p2p),
        ledger=_ledger(ledger, base),
        orchestrator=_orchestrator(orch),
        gateway=_gateway(gw, base),
        api=api_config(api, base),
        delegator=_delegator(dele, "delegator" in roles),
        metrics=metrics_config(_table(raw, "metrics")),
        keys={role: path_value(value, base, f"keys.{role}") for role, value in keys.items()},
        redeem_interval_s=number(
            orch.get("redeem_interval_s", 5.0), "orchestrator.redeem_interval_s", 0.05
        ),
        min_offers=int(number(gw.get("min_offers", 1), "gateway.min_offers", 0)),
        max_jobs=integer(gw.get("max_jobs", MAX_JOBS), "gateway.max_jobs", 1),
        retention=Retention(
            number(gw.get("retention_days", Retention().days), "gateway.retention_days", 0.0),
            boolean(gw.get("keep_inputs", Retention().keep_inputs), "gateway.keep_inputs"),
        ),
    )  # fmt: skip
    return config


def _check_keys(table: Mapping[str, Any], section: str) -> None:
    unknown = sorted(set(table) - _SECTIONS[section])
    if unknown:
        where = f"[{section}]" if section else "the top level"
        allowed = ", ".join(sorted(_SECTIONS[section]))
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {allowed})")


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    _check_keys(value, name)
    return value


def _roles(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"roles must name at least one of {', '.join(ROLES)}")
    roles: list[str] = []
    for role in value:
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: roles are {', '.join(ROLES)}")
        if role in roles:
            raise ConfigError(f"role {role!r} is listed twice")
        roles.append(role)
    return tuple(sorted(roles, key=ROLES.index))


def _p2p(t: Mapping[str, Any]) -> P2PConfig:
    try:
        return P2PConfig(
            network=t.get("network", DEFAULT_NETWORK),
            listen=strings(t.get("listen", ["/ip4/127.0.0.1/tcp/0"]), "p2p.listen"),
            bootstrap=strings(t.get("bootstrap", []), "p2p.bootstrap"),
            mdns=bool(t.get("mdns", False)),
            sync_interval_s=2.0,
            require_bootstrap=boolean(t.get("require_bootstrap", True), "p2p.require_bootstrap"),
            admission=_admit(t.get("admit", ADMIT_STANDING), "p2p.admit"),
            peers_target=integer(t.get("peers", PEERS_TARGET), "p2p.peers", 0),
            max_peers=integer(t.get("max_peers", MAX_PEERS), "p2p.max_peers", 0),
            inbound_per_ip=integer(
                t.get("inbound_per_ip", INBOUND_PER_IP), "p2p.inbound_per_ip", 0
            ),
        )
    except ValueError as exc:
        raise ConfigError(f"[p2p]: {exc}") from None


def _ledger(t: Mapping[str, Any], base: Path) -> LedgerConfig:
    kind = t.get("kind", "")
    if kind != "" and kind not in LEDGER_KINDS:
        raise ConfigError(f"ledger.kind {kind!r}: use one of {', '.join(LEDGER_KINDS)}")
    rpc_url = t.get("rpc_url", "")
    if kind == "rpc" and not (
        isinstance(rpc_url, str) and rpc_url.startswith(("http://", "https://"))
    ):
        raise ConfigError('ledger.kind = "rpc" needs ledger.rpc_url = "http(s)://..."')
    if kind == "rpc" and "contracts" not in t:
        raise ConfigError('ledger.kind = "rpc" needs ledger.contracts = "FILE" (from deploying)')
    contracts = path_value(t["contracts"], base, "ledger.contracts") if "contracts" in t else None
    return LedgerConfig(
        kind=kind,
        rpc_url=rpc_url,
        deposit=wei(t.get("deposit", 10**18), "ledger.deposit"),
        reserve=wei(t.get("reserve", 10**18), "ledger.reserve"),
        contracts=contracts,
    )  # fmt: skip


def _orchestrator(t: Mapping[str, Any]) -> OrchestratorConfig:
    encoder = t.get("encoder", "software")
    if encoder not in ("software", "hardware", "auto"):
        raise ConfigError(f"orchestrator.encoder {encoder!r}: software, hardware or auto")
    return OrchestratorConfig(
        price_per_pixel=fraction(t.get("price_per_pixel", 1000), "orchestrator.price_per_pixel"),
        capacity=integer(t.get("capacity", 2), "orchestrator.capacity", 1),
        ticket_ev=Fraction(wei(t.get("ticket_ev", 2 * 10**10), "orchestrator.ticket_ev")),
        encoder=encoder,
        offer_interval_s=number(t.get("offer_interval_s", 30.0), "orchestrator.offer_interval_s",
                                 0.1),
        validity_blocks=integer(t.get("validity_blocks", 5), "orchestrator.validity_blocks", 2),
        workers=peer_ids(t.get("workers", []), "orchestrator.workers"),
        allow_any_worker=boolean(t.get("allow_any_worker", False), "orchestrator.allow_any_worker"),
        worker_timeout_s=number(t.get("worker_timeout_s", 120.0),
                                 "orchestrator.worker_timeout_s", 1.0),
    )  # fmt: skip


def _admit(value: Any, name: str) -> bool:
    """Whether admission by standing is on: "standing" (the default) or "open"."""
    if value not in ADMIT_MODES:
        raise ConfigError(f"{name} {value!r}: use {' or '.join(map(repr, ADMIT_MODES))}")
    return bool(value == ADMIT_STANDING)


def _gateway(t: Mapping[str, Any], base: Path) -> GatewayConfig:
    profiles = t.get("profiles", "360p,240p")
    preset = t.get("preset", "veryfast")
    try:
        parse_profiles(profiles) if isinstance(profiles, str) else parse_profiles("")
    except MediaError as exc:
        raise ConfigError(f"gateway.profiles {profiles!r}: {exc}") from None
    if preset not in X264_PRESETS:
        raise ConfigError(f"gateway.preset {preset!r}: one of {', '.join(X264_PRESETS)}")
    return GatewayConfig(
        profiles=profiles,
        preset=preset,
        max_price_per_pixel=fraction(t.get("max_price_per_pixel", 10**6),
                                      "gateway.max_price_per_pixel"),
        job_timeout_s=number(t.get("job_timeout_s", 120.0), "gateway.job_timeout_s", 1.0),
        suspend_s=number(t.get("suspend_s", 300.0), "gateway.suspend_s", 0.0),
        ai_recheck=share(t.get("ai_recheck", 0.25), "gateway.ai_recheck"),
        ai_models_dir=(path_value(t["ai_models_dir"], base, "gateway.ai_models_dir")
                       if "ai_models_dir" in t else None),
        verify=_verify_policy(t.get("verify", "sample")),
        verify_fraction=_verify_fraction(t.get("verify_fraction", "1/8")),
        summary_interval_s=number(t.get("summary_interval_s", SUMMARY_EVERY_S),
                                  "gateway.summary_interval_s", 1.0),
    )  # fmt: skip


def _verify_policy(value: Any) -> str:
    if value not in VERIFY_POLICIES:
        raise ConfigError(f"gateway.verify {value!r}: one of {', '.join(VERIFY_POLICIES)}")
    return str(value)


def _verify_fraction(value: Any) -> Fraction:
    if isinstance(value, float):
        value = str(value)
    share = fraction(value, "gateway.verify_fraction")
    if share > 1:
        raise ConfigError(f"gateway.verify_fraction is a share of segments, 0..1, got {value!r}")
    return share


def _delegator(t: Mapping[str, Any], active: bool) -> DelegatorConfig:
    if "orchestrator" not in t:
        if active and t.get("amount"):
            raise ConfigError("delegator.amount is set but delegator.orchestrator is not")
        return DelegatorConfig()
    return DelegatorConfig(
        address(t["orchestrator"], "delegator.orchestrator"),
        wei(t.get("amount", 0), "delegator.amount"),
    )
