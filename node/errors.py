"""The one error a user can act on, found inside the exception groups that trio nurseries wrap
errors in (what a command shows when it fails)."""

from __future__ import annotations


def user_error(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`exc` itself, or the first error of `kinds` inside an exception group; None when there
    is none (a bug: let its traceback show)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = user_error(inner, kinds)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, kinds) else None


def interrupted(exc: BaseException) -> bool:
    """Whether `exc` is (or a group holds) a KeyboardInterrupt: Ctrl-C, exit 130."""
    return user_error(exc, (KeyboardInterrupt,)) is not None


class ServiceError(Exception):
    """The service cannot start as configured; the message says why."""


NO_CHAIN = (
    'no chain configured: set ledger.kind = "embedded" (an in-process EVM with the protocol '
    'contracts, for a single-process node) or "rpc" with ledger.rpc_url and ledger.contracts'
)
