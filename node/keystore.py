"""Wallet keys in encrypted Ethereum V3 keystore files (eth-account), and where their password
comes from: a file, the `CASTNET_PASSWORD` environment variable, or an interactive prompt.
The wallet key signs events and tickets; the libp2p identity is a separate key (see p2p)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from events.crypto import SECP256K1_N, LocalKeySigner, Signer, keccak256, parse_address
from events.kinds import JobChainOpened, binding_digest

PASSWORD_ENV = "CASTNET_PASSWORD"
KDFS = ("scrypt", "pbkdf2")
MAX_KEYSTORE_BYTES = 64 * 1024


class KeystoreError(Exception):
    """A keystore that cannot be created, read or decrypted; the message says which and why."""


def _accounts() -> Any:
    """eth-account's Account, imported when a keystore is made or opened: it loads ~0.65 s of
    modules that every other CLI start would pay for."""
    from eth_account import Account

    return Account


class WrongPassword(KeystoreError):
    """The password does not decrypt this keystore (its MAC does not match)."""


def create_keystore(
    path: str | Path,
    password: str,
    private_key: bytes | None = None,
    kdf: str = "scrypt",
    work: int | None = None,
) -> bytes:
    """Encrypt a new (or the given) key into `path`, readable by its owner only; returns the
    address. `work` is scrypt's n or pbkdf2's iterations (eth-account's defaults when None).
    Never overwrites an existing file."""
    path = Path(path)
    if kdf not in KDFS:
        raise KeystoreError(f"unknown kdf {kdf!r}: use one of {', '.join(KDFS)}")
    if not password:
        raise KeystoreError("refusing an empty keystore password")
    if path.exists():
        raise KeystoreError(f"{path} exists: not overwriting a keystore")
    accounts = _accounts()
    account = accounts.from_key(private_key) if private_key else accounts.create()
    document = accounts.encrypt(account.key, password, kdf=kdf, iterations=work)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return parse_address(account.address)


def read_keystore(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEYSTORE_BYTES:
            raise KeystoreError(f"{path}: too large to be a keystore")
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeystoreError(
            f"{path}: no such keystore (create one with `castnet keys new`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"{path}: not a keystore: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != 3 or "crypto" not in document:
        raise KeystoreError(f"{path}: not a version 3 keystore")
    return document


def keystore_address(path: str | Path) -> bytes:
    """The address a keystore declares, without decrypting it."""
    document = read_keystore(path)
    try:
        return parse_address("0x" + str(document["address"]).removeprefix("0x"))
    except (KeyError, ValueError) as exc:
        raise KeystoreError(f"{path}: keystore has no valid address: {exc}") from None


def load_keystore(path: str | Path, password: str) -> bytes:
    """Decrypt and return the 32-byte private key; WrongPassword on a MAC mismatch."""
    document = read_keystore(path)
    accounts = _accounts()
    try:
        key = bytes(accounts.decrypt(document, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(f"{path}: wrong password") from None
        raise KeystoreError(f"{path}: cannot decrypt: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path}: malformed keystore: {exc!r}") from None
    declared = document.get("address")
    if declared:
        actual = accounts.from_key(key).address.lower().removeprefix("0x")
        if str(declared).lower().removeprefix("0x") != actual:
            raise KeystoreError(f"{path}: decrypted key does not match the declared address")
    return key


def resolve_password(
    password_file: str | Path | None,
    environ: Mapping[str, str],
    *,
    interactive: bool | None = None,
    confirm: bool = False,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """The password from `--password-file`, else `CASTNET_PASSWORD`, else a prompt when stdin is
    a terminal; a KeystoreError names all three when none is available."""
    if password_file is not None:
        try:
            text = Path(password_file).read_text()
        except OSError as exc:
            raise KeystoreError(f"cannot read password file {password_file}: {exc}") from None
        password = text.rstrip("\r\n")
        if not password:
            raise KeystoreError(f"password file {password_file} is empty")
        return password
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise KeystoreError(
            f"no keystore password: pass --password-file FILE, set {PASSWORD_ENV}, "
            "or run in a terminal to be prompted"
        )
    password = prompt("keystore password: ")
    if confirm and prompt("repeat password: ") != password:
        raise KeystoreError("passwords do not match")
    if not password:
        raise KeystoreError("empty password")
    return password


JOB_KEY_TAG = b"castnet/job-key/v1\x00"


def job_signer(principal: Signer, counterparty: bytes, network: str) -> LocalKeySigner:
    """The key of the job chain `principal` keeps with `counterparty` on `network`.

    It is derived, not stored: the hash of the principal's (deterministic, RFC 6979) signature
    over the pair, so only the principal can make it, the same key comes back after a restart,
    and the keystore stays the one secret to keep."""
    digest = keccak256(JOB_KEY_TAG + principal.address + counterparty + network.encode())
    for attempt in range(256):  # a hash outside the curve order is astronomically rare
        key = keccak256(principal.sign_hash(digest) + bytes((attempt,)))
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:
            return LocalKeySigner(key)
    raise KeystoreError("cannot derive a job key")  # pragma: no cover


def open_job_chain(
    principal: Signer, counterparty: bytes, network: str
) -> tuple[LocalKeySigner, JobChainOpened]:
    """A pair's job key and the binding (its chain's first event) that proves it speaks for
    `principal` towards `counterparty`."""
    signer = job_signer(principal, counterparty, network)
    sig = principal.sign_hash(binding_digest(signer.address, counterparty, network))
    return signer, JobChainOpened(principal.address, counterparty, network, sig)
