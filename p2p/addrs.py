"""Checks of the multiaddrs a user types (`--listen`, `--bootstrap`), so a typo is one clear
error before anything starts, and a listen port another program holds is named as such."""

from __future__ import annotations

import contextlib
import re
import socket

import base58
import multiaddr

LISTEN_FORM = "/ip4/HOST/tcp/PORT (or /ip6/HOST/tcp/PORT)"
PEER_FORM = "/ip4/HOST/tcp/PORT/p2p/PEER_ID"


def check_listen_addr(text: str) -> tuple[str, int]:
    """(host, port) of a TCP listen multiaddr; ValueError naming the address otherwise."""
    try:
        addr = multiaddr.Multiaddr(text)
        names = [p.name for p in addr.protocols()]
        if names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]) or len(names) != 2:
            raise ValueError(f"expected {LISTEN_FORM}")
        host = addr.value_for_protocol(names[0])
        port = int(addr.value_for_protocol("tcp"))
    except Exception as exc:  # multiaddr raises a variety of errors
        raise ValueError(f"bad listen address {text!r}: {_short(exc)}; expected {LISTEN_FORM}"
                         ) from None  # fmt: skip
    return host, port


def check_bootstrap_addr(text: str) -> None:
    """ValueError unless `text` is a full peer multiaddr (address and peer id)."""
    try:
        addr = multiaddr.Multiaddr(text)
        names = [p.name for p in addr.protocols()]
        if "p2p" not in names:
            raise ValueError("it names no peer id")
        if names[-1] != "p2p" or len(names) < 2:
            raise ValueError("the peer id (/p2p/...) must end an address")
        if not is_peer_id(addr.value_for_protocol("p2p")):
            raise ValueError(f"{addr.value_for_protocol('p2p')!r} is not a libp2p peer id")
    except Exception as exc:  # multiaddr raises a variety of errors
        raise ValueError(f"bad bootstrap address {text!r}: {_short(exc)}; expected {PEER_FORM} "
                         "(a node prints it as `listening ...`)") from None  # fmt: skip


def is_peer_id(text: str) -> bool:
    """Whether `text` is a libp2p peer id in base58 (a multihash: the identity (0x00) or
    sha2-256 (0x12) code, then its digest's length and the digest), checked without libp2p,
    which takes about a second to import."""
    try:
        raw = base58.b58decode(text)
    except ValueError:
        return False
    return len(raw) >= 3 and raw[0] in (0x00, 0x12) and raw[1] == len(raw) - 2


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on ("address already in use", ...), or None when it
    can. A probe without SO_REUSEPORT: libp2p listens with it, so a second node on the same
    port would otherwise share it silently."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None


def dial_problem(text: str, timeout_s: float) -> str:
    """Why a peer multiaddr could not be dialled, told by a plain TCP connect (blocking):
    libp2p's own errors only say that every address failed."""
    try:
        addr = multiaddr.Multiaddr(text)
        names = [p.name for p in addr.protocols()]
        host, port = addr.value_for_protocol(names[0]), int(addr.value_for_protocol("tcp"))
    except Exception:  # not a TCP address: nothing more to tell
        return "cannot connect"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as exc:
        return f"{host}:{port}: {(exc.strerror or str(exc)).lower()}"
    return f"{host}:{port} answers, but not as that peer (wrong peer id, or not a castnet node)"


def _short(exc: BaseException) -> str:
    """The parser's reason without its echo of the address."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^Invalid MultiAddr '[^']*': ", "", text)
    return re.sub(r" \(string: [^)]*\)$", "", text)[:160]
