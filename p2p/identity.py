"""The node's libp2p identity: a secp256k1 key in `<data dir>/p2p.key`, made once, so the peer id
is stable across restarts. It is not the wallet key; an `Offer` binds the two."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID

from p2p.errors import IdentityError

KEY_FILE = "p2p.key"
_HEADER = b"castnet-p2p-secp256k1\n"


def key_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEY_FILE


def load_or_create_identity(data_dir: str | Path) -> KeyPair:
    """The key pair stored in `data_dir`, created (mode 0600, fsynced) if there is none."""
    path = key_path(data_dir)
    if path.exists():
        return load_identity(data_dir)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _HEADER + secret.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return create_new_key_pair(secret)


def load_identity(data_dir: str | Path) -> KeyPair:
    path = key_path(data_dir)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
    if not text.startswith(_HEADER):
        raise IdentityError(f"{path} is not a castnet p2p key file")
    try:
        secret = bytes.fromhex(text[len(_HEADER) :].strip().decode())
    except ValueError:
        raise IdentityError(f"{path}: the key is not hex") from None
    if len(secret) != 32:
        raise IdentityError(f"{path}: a secp256k1 key has 32 bytes, found {len(secret)}")
    return create_new_key_pair(secret)


def peer_id_of(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
