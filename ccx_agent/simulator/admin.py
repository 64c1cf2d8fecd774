"""What an SSM administrator does: buy or remove licenses, create and revoke tokens, look.

The CLI uses it directly on the database (also while the server runs), the admin HTTP
endpoint through the running simulator, and the what-if simulator in process. Every
refusal is an :class:`AdminError` with a one-line message for the operator.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ccx_agent.licensing.catalogue import ALL_TAGS
from ccx_agent.licensing.timeutil import iso
from ccx_agent.simulator.ca import ensure_state_dir
from ccx_agent.simulator.db import DB_NAME, DEFAULT_ACCOUNT, Database, Tx, token_hash

#: Bounds on what an admin can ask for (a typo like ``--uses 10000000000`` is refused).
MAX_USES = 1_000_000
MAX_LICENSES = 1_000_000_000
MAX_ACCOUNT_NAME = 64
DEFAULT_TOKEN_EXPIRY = timedelta(days=30)


class AdminError(ValueError):
    """An admin request that cannot be done as asked (unknown tag, account, token …)."""


def pooled_usage(tx: Tx, account: str, *, exclude: str | None = None) -> dict[str, int]:
    """The sum, per tag, of the latest usage reported by the account's active instances
    (but ``exclude``): what the pool of licenses is used by (kept up to date on insert,
    :meth:`Tx.pooled_usage`)."""
    return tx.pooled_usage(account, exclude=exclude)


def _check_tag(tag: str) -> None:
    if tag not in ALL_TAGS:
        raise AdminError(f"unknown tag {tag!r}; known tags: {', '.join(sorted(ALL_TAGS))}")


def _check_count(n: int, what: str, limit: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= limit:
        raise AdminError(f"{what} must be a whole number from 0 to {limit}, got {n!r}")


def _check_account_name(account: str) -> None:
    if (
        not isinstance(account, str)
        or not account
        or len(account) > MAX_ACCOUNT_NAME
        or not account.isprintable()
    ):
        raise AdminError(
            f"an account name is 1 to {MAX_ACCOUNT_NAME} printable characters, got {account!r}"
        )


def _need_account(tx: Tx, account: str) -> None:
    if not tx.has_account(account):
        known = ", ".join(tx.accounts())
        raise AdminError(
            f"no account {account!r} (accounts: {known}); 'license add' creates an account"
        )


class Admin:
    """Administration of one simulator database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> Admin:
        """The admin side of a state directory (created if new; the CA is left to the
        server, which creates it on first start)."""
        ensure_state_dir(state_dir)
        return cls(Database(state_dir / DB_NAME))

    def close(self) -> None:
        self.db.close()

    # --- licenses -----------------------------------------------------------------------

    def add_licenses(self, tag: str, n: int, account: str = DEFAULT_ACCOUNT) -> int:
        """Buy ``n`` licenses of ``tag`` for ``account`` (created if new); the new total.

        The next REGISTER, AUTHORIZE or REPORT_USAGE response of the account's instances
        carries it."""
        _check_tag(tag)
        _check_count(n, "the number of licenses", MAX_LICENSES)
        _check_account_name(account)
        with self.db.transaction() as tx:
            tx.add_account(account)
            total = tx.purchased(account).get(tag, 0) + n
            if total > MAX_LICENSES:
                raise AdminError(f"an account holds at most {MAX_LICENSES} licenses of a tag")
            tx.set_purchased(account, tag, total)
        return total

    def remove_licenses(self, tag: str, n: int, account: str = DEFAULT_ACCOUNT) -> int:
        """Remove up to ``n`` licenses (a count never goes below 0); the new total."""
        _check_tag(tag)
        _check_count(n, "the number of licenses", MAX_LICENSES)
        with self.db.transaction() as tx:
            _need_account(tx, account)
            total = max(0, tx.purchased(account).get(tag, 0) - n)
            tx.set_purchased(account, tag, total)
        return total

    # --- tokens -------------------------------------------------------------------------

    def create_token(
        self,
        account: str = DEFAULT_ACCOUNT,
        uses: int = 1,
        expires: timedelta = DEFAULT_TOKEN_EXPIRY,
        *,
        now: datetime,
    ) -> str:
        """A new registration (ID) token for ``account``: usable ``uses`` times until
        ``now + expires``. Only its hash is stored: it is shown this once."""
        _check_count(uses, "uses", MAX_USES)
        if uses < 1:
            raise AdminError("a token must allow at least 1 use")
        if expires <= timedelta(0):
            raise AdminError("a token must expire after it is created")
        token = id_token()
        with self.db.transaction() as tx:
            _need_account(tx, account)
            tx.add_token(token_hash(token), account, uses, now, now + expires)
        return token

    def revoke_token(self, token: str) -> None:
        """Revoke a token: registrations with it are refused (TOKEN_REVOKED) from now on;
        instances already registered with it stay registered."""
        with self.db.transaction() as tx:
            if not tx.revoke_token(token_hash(token)):
                raise AdminError("no such token")

    # --- looking --------------------------------------------------------------------------

    def show(self, now: datetime) -> dict[str, Any]:
        """Accounts (purchased vs used per tag), instances (with their last report) and
        tokens, as JSON-ready data: what ``ssm show`` and ``GET /admin/state`` print."""
        with self.db.read() as tx:
            accounts: dict[str, Any] = {}
            for name in tx.accounts():
                purchased = tx.purchased(name)
                usage = pooled_usage(tx, name)
                tags = sorted(set(purchased) | set(usage))
                accounts[name] = {
                    "purchased": purchased,
                    "tags": {
                        t: {
                            "purchased": purchased.get(t, 0),
                            "usage": usage.get(t, 0),
                            "available": max(0, purchased.get(t, 0) - usage.get(t, 0)),
                        }
                        for t in tags
                    },
                }
            instances = []
            for inst in tx.instances():
                last = tx.latest_report(inst.piid)
                expiry = tx.latest_certificate_expiry(inst.piid)
                instances.append(
                    {
                        "piid": inst.piid,
                        "account": inst.account,
                        "udi": {"pid": inst.pid, "serial": inst.serial, "uuid": inst.uuid},
                        "license_type": inst.license_type,
                        "state": "active" if inst.active else "deregistered",
                        "registered_at": iso(inst.registered_at),
                        "deregistered_at": _iso_or_none(inst.deregistered_at),
                        "last_contact": iso(inst.last_contact),
                        "cert_expires_at": _iso_or_none(expiry),
                        "last_report": None if last is None else last.as_json(),
                    }
                )
            tokens = tx.tokens()
        usable = sum(1 for t in tokens if not t.revoked and t.used < t.uses and now < t.expires_at)
        return {
            "accounts": accounts,
            "instances": instances,
            "tokens": {"total": len(tokens), "usable": usable},
        }

    def reports(self, piid: str | None = None) -> list[dict[str, Any]]:
        """Every stored report (of one instance, or all) in arrival order."""
        with self.db.read() as tx:
            return [r.as_json() for r in tx.reports(piid)]


def id_token() -> str:
    """A new ID token: 256 random bits, URL-safe, never starting with ``-`` (a token that
    did would read as an option: ``ccx-agent register -x…``)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def _iso_or_none(ts: datetime | None) -> str | None:
    return None if ts is None else iso(ts)


def purchased_view(purchased: Mapping[str, int], tags: tuple[str, ...]) -> dict[str, int]:
    """An account's totals with every tag of the instance's license type present (0 when
    none were bought), so an agent never has to guess what a missing tag means."""
    return {**{t: 0 for t in tags}, **purchased}
