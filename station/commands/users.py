"""`station users …`: HMI accounts. There is no default password; the first admin is made here.

    station users add --role admin NAME      prompts for the password twice (or reads one line from stdin)
    station users passwd NAME                 sets a new password
    station users list
    station users disable NAME / enable NAME

The database is the station's (``--config station.toml``), or ``--db URL``, or the demo's
``var/station.db`` under the current directory.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="HMI user accounts (add, passwd, list, disable, enable)")
    usub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, help="station.toml (its database is used)")
        q.add_argument("--db", help="database URL (default: the demo's sqlite:///var/station.db)")

    q = usub.add_parser("add", help="create a user; prompts for the password, or reads it from stdin")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=["operator", "engineer", "admin"])
    common(q)
    q.set_defaults(func=_add)
    q = usub.add_parser("passwd", help="set a user's password")
    q.add_argument("name")
    common(q)
    q.set_defaults(func=_passwd)
    q = usub.add_parser("list", help="list users")
    common(q)
    q.set_defaults(func=_list)
    for action, flag in (("disable", True), ("enable", False)):
        q = usub.add_parser(action, help=f"{action} a user")
        q.add_argument("name")
        common(q)
        q.set_defaults(func=_set_disabled, disabled=flag)


def _store(args):
    from station.db.engine import make_engine
    from station.hmi.store import HmiStore, ensure_schema

    if args.db:
        url = args.db
    elif args.config:
        from station.config import load_station_config

        url = load_station_config(args.config).database.url
    else:
        url = f"sqlite:///{(Path.cwd() / 'var' / 'station.db').resolve()}"
    engine = make_engine(url)
    ensure_schema(engine)
    return HmiStore(engine)


def _read_password(name: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _run(fn) -> int:
    from station.hmi.auth import AuthError
    from station.hmi.store import StoreError

    try:
        return fn()
    except (AuthError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _add(args) -> int:
    from station.hmi.auth import Authenticator

    def go() -> int:
        store = _store(args)
        password = _read_password(args.name)
        user = Authenticator(store).create_user(args.name, args.role, password, _actor())
        print(f"user {user.username} ({user.role}) created")
        return 0

    return _run(go)


def _passwd(args) -> int:
    from station.hmi.auth import Authenticator

    def go() -> int:
        store = _store(args)
        if store.get_user(args.name.lower()) is None:
            raise ValueError(f"no user {args.name!r}")
        Authenticator(store).set_password(args.name.lower(), _read_password(args.name), _actor())
        print(f"password of {args.name} changed")
        return 0

    return _run(go)


def _list(args) -> int:
    def go() -> int:
        for u in _store(args).users():
            state = "disabled" if u.disabled else "active"
            last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
            print(f"{u.username:24} {u.role:9} {state:9} last login {last}")
        return 0

    return _run(go)


def _set_disabled(args) -> int:
    def go() -> int:
        store = _store(args)
        store.update_user(args.name.lower(), _actor(), disabled=args.disabled)
        print(f"user {args.name} {'disabled' if args.disabled else 'enabled'}")
        return 0

    return _run(go)
