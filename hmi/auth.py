"""Login: argon2 password hashes, rate-limited failed logins, roles, session timeout.

Roles are ranked: operator (view, acknowledge alarms) < engineer (history, review, recipes)
< admin (users, station settings); a higher role may do everything a lower one may. There is
no default password: the first admin is created with ``station users add --role admin NAME``.

Failed logins are limited per user name *and* client address: after ``max_failures`` within
``window_s`` that pair is locked for ``lockout_s``, doubling with every further failure up to
``max_lockout_s``; someone guessing at the admin's password from one address locks out that
address, never the admin everywhere. One address guessing across many names is locked after
``ADDRESS_FACTOR`` times as many failures. The message never says whether the name or the
password was wrong.

Every successful login, failed login (with the reason), lockout, logout and expired session
is written to the audit log (actor: the user name as typed, target: the client address). A
restart rebuilds the recent failures, and so the locks, from it. Attempts refused during a
lock are not written one by one (no argon2 check is done for them, and a flood of them must not
fill the database): the lockout entry stands for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import unicodedata
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from station.db.models import AuditLogRow, utcnow
from station.hmi.store import ROLES, HmiStore

log = logging.getLogger("hmi.auth")

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; refuse absurd inputs before hashing
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")

_hasher = argon2.PasswordHasher()


class AuthError(ValueError):
    """A refused name, password or role, with the reason for the user."""


def allows(role: str | None, needed: str) -> bool:
    """True if a user with ``role`` may do what needs ``needed``."""
    return role in ROLE_RANK and ROLE_RANK[role] >= ROLE_RANK[needed]


def check_username(name: str) -> str:
    name = name.strip()
    if not 2 <= len(name) <= 64:
        raise AuthError("user name: 2 to 64 characters")
    if not set(name) <= USERNAME_CHARS or not name[0].isalnum():
        raise AuthError("user name: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit")
    return name


def check_password(password: str, username: str = "") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AuthError(f"password: at most {MAX_PASSWORD_LENGTH} characters")
    if username and password.lower() == username.lower():
        raise AuthError("password: must differ from the user name")
    if len(set(password)) < 4:
        raise AuthError("password: too few different characters")


def hash_password(password: str) -> str:
    return _hasher.hash(unicodedata.normalize("NFC", password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, unicodedata.normalize("NFC", password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class LoginThrottle:
    """Failed-login counter per key (user name, client address). Times in seconds (monotonic)."""

    def __init__(self, max_failures: int = 5, window_s: float = 900.0, lockout_s: float = 30.0,
                 max_lockout_s: float = 900.0, clock=time.monotonic, max_keys: int = 10_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_lockout_s = max_lockout_s
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def wait_s(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            return max(0.0, self._locked_until.get(key, 0.0) - self.clock())

    def failure(self, key: str, at: float | None = None) -> float:
        """Count a failure (now, or ``at`` on this throttle's clock when replaying); returns the
        lockout now in force for ``key`` (0: none)."""
        now = self.clock() if at is None else at
        with self._lock:
            if len(self._failures) > self.max_keys:
                self._prune(now)
            recent = [t for t in self._failures.get(key, []) if now - t < self.window_s] + [now]
            self._failures[key] = recent
            excess = len(recent) - self.max_failures
            if excess < 0:
                return 0.0
            lock = min(self.max_lockout_s, self.lockout_s * 2**excess)
            self._locked_until[key] = now + lock
            return lock

    def _prune(self, now: float) -> None:
        """Forget keys with no recent failure and no lock (many guessed names must not grow memory)."""
        for key in list(self._failures):
            if self._locked_until.get(key, 0.0) <= now and all(now - t >= self.window_s for t in self._failures[key]):
                del self._failures[key]
                self._locked_until.pop(key, None)

    def success(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._locked_until.pop(key, None)


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    username: str = ""
    role: str = ""


GENERIC_FAILURE = "wrong user name or password"
ADDRESS_FACTOR = 4  # failures one address may make across all names, per user-and-address failure
AUDIT_ACTOR_MAX = 64  # the audit log's actor column


class Authenticator:
    def __init__(self, store: HmiStore, throttle: LoginThrottle | None = None,
                 address_throttle: LoginThrottle | None = None):
        self.store = store
        self.throttle = throttle or LoginThrottle()  # keys: "name@address"
        t = self.throttle
        self.address_throttle = address_throttle or LoginThrottle(  # keys: the address
            max_failures=t.max_failures * ADDRESS_FACTOR, window_s=t.window_s, lockout_s=t.lockout_s,
            max_lockout_s=t.max_lockout_s, clock=t.clock, max_keys=t.max_keys)
        # verify against a real hash when the user does not exist, so timing does not tell
        self._dummy_hash = hash_password("not-a-user-password")
        self._replay_audit()

    @staticmethod
    def _pair(name: str, client: str) -> str:
        return f"{name}@{client}"

    def login(self, username: str, password: str, client: str = "") -> LoginResult:
        name = username.strip().lower()
        pair = self._pair(name, client)
        wait = max(self.throttle.wait_s(pair), self.address_throttle.wait_s(client))
        if wait > 0:
            return LoginResult(False, f"too many failed logins: try again in {wait:.0f} s")
        if len(password) > MAX_PASSWORD_LENGTH:
            return self._fail(name, client, "password too long")
        with self.store.session() as s:  # read, then verify outside any transaction (argon2 is slow)
            row = self.store.user_row(s, name)
            stored = (row.password_hash, row.disabled) if row is not None else None
        good = verify_password(stored[0] if stored else self._dummy_hash, password)
        if stored is None:
            return self._fail(name, client, "unknown user")
        if not good or stored[1]:
            with self.store.write() as s:
                row = self.store.user_row(s, name)
                if row is not None:
                    row.failed_logins += 1
            return self._fail(name, client, "user disabled" if good else "wrong password")
        now = utcnow()
        role = None
        with self.store.write() as s:
            row = self.store.user_row(s, name)
            if row is not None and not row.disabled:
                row.failed_logins = 0
                row.locked_until = None
                row.last_login_at = now
                if _hasher.check_needs_rehash(row.password_hash):
                    row.password_hash = hash_password(password)
                role = row.role
        if role is None:  # removed or disabled meanwhile (audited after the transaction: one writer at a time)
            return self._fail(name, client, "user removed or disabled meanwhile")
        self.throttle.success(pair)
        self._audit(name, "auth.login", client, f"role={role}")
        return LoginResult(True, "", name, role)

    def _fail(self, name: str, client: str, reason: str) -> LoginResult:
        lock = self.throttle.failure(self._pair(name, client))
        address_lock = self.address_throttle.failure(client)
        self._audit(name, "auth.login_failed", client, reason)
        if lock:
            self._audit(name, "auth.lockout", client, f"{name or '(empty)'} from {client or '?'} locked for {lock:.0f} s")
        if address_lock:
            self._audit(name, "auth.lockout", client, f"every name from {client or '?'} locked for {address_lock:.0f} s")
        return LoginResult(False, GENERIC_FAILURE)

    def logout(self, username: str, client: str) -> None:
        self._audit(username, "auth.logout", client)

    def session_expired(self, username: str, client: str) -> None:
        self._audit(username, "auth.session_expired", client)

    def _audit(self, actor: str, action: str, client: str, detail: str | None = None) -> None:
        try:
            self.store.audit(actor[:AUDIT_ACTOR_MAX], action, client, after=detail)
        except Exception:  # the database is down: the login itself must not depend on it
            log.exception("audit log: could not record %s of %r from %s", action, actor, client)

    def _replay_audit(self) -> None:
        """Count again the failures of the last window from the audit log (a restart must not
        lift a lock), on the throttles' monotonic clock."""
        window = max(self.throttle.window_s, self.address_throttle.window_s)
        now_wall, now_mono = utcnow(), self.throttle.clock()
        try:
            with self.store.session() as s:
                rows = s.execute(select(AuditLogRow.at, AuditLogRow.actor, AuditLogRow.action, AuditLogRow.target)
                                 .where(AuditLogRow.action.in_(("auth.login_failed", "auth.login")),
                                        AuditLogRow.at >= now_wall - dt.timedelta(seconds=window))
                                 .order_by(AuditLogRow.id)).all()
        except Exception:  # no database yet: nothing to replay
            log.exception("audit log: cannot read recent logins; failed-login counts start from zero")
            return
        for at, actor, action, client in rows:
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.timezone.utc)
            mono = now_mono - (now_wall - at).total_seconds()
            if action == "auth.login":
                self.throttle.success(self._pair(actor, client))
            else:
                self.throttle.failure(self._pair(actor, client), at=mono)
                self.address_throttle.failure(client, at=mono)

    def create_user(self, username: str, role: str, password: str, actor: str):
        name = check_username(username.lower())
        if role not in ROLES:
            raise AuthError(f"role: one of {', '.join(ROLES)}")
        check_password(password, name)
        return self.store.add_user(name, role, hash_password(password), actor)

    def set_password(self, username: str, password: str, actor: str):
        check_password(password, username)
        return self.store.update_user(username, actor, password_hash=hash_password(password))


# ---- sessions (NiceGUI per-browser storage) -----------------------------------------------
@dataclass(frozen=True)
class SessionUser:
    username: str
    role: str


def sign_in(storage: dict, username: str, role: str) -> None:
    storage["auth"] = {"username": username, "role": role, "last_seen": time.time()}


def sign_out(storage: dict) -> None:
    storage.pop("auth", None)


def session_user(storage: dict, timeout_s: float, *, touch: bool = True) -> SessionUser | None:
    """The signed-in user, or None when nobody is or the session was idle longer than ``timeout_s``."""
    auth = storage.get("auth")
    if not isinstance(auth, dict):
        return None
    now = time.time()
    if now - float(auth.get("last_seen", 0)) > timeout_s:
        storage.pop("auth", None)
        return None
    if touch:
        storage["auth"] = {**auth, "last_seen": now}
    return SessionUser(auth["username"], auth["role"])
