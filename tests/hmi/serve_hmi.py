"""Serve the real HMI (``station.hmi.app.run``: the same middlewares, cookies and TLS options as
`station run`) on a test station, for tests that need a real server: headers, TLS, body limits.

    python -m tests.hmi.serve_hmi ROOT PORT [CERTFILE KEYFILE]

ROOT gets the station's files; users emil (engineer) and ada (admin) with the test passwords.
"""

from __future__ import annotations

import sys
from pathlib import Path

from station.config import HmiConfig
from station.db.engine import make_engine
from station.hmi.app import run
from station.hmi.auth import Authenticator
from station.hmi.store import HmiStore, ensure_schema
from tests.hmi.conftest import PASSWORDS
from tests.hmi.stand import make_station


def main(argv: list[str]) -> None:
    root, port = Path(argv[0]), int(argv[1])
    tls = {"certfile": argv[2], "keyfile": argv[3]} if len(argv) > 3 else {}
    station = make_station(root, hmi_port=port)
    engine = make_engine(station.config.database.url)
    ensure_schema(engine)
    auth = Authenticator(HmiStore(engine))
    for name, role in (("emil", "engineer"), ("ada", "admin")):
        auth.create_user(name, role, PASSWORDS[name], "test")
    engine.dispose()
    station.start()
    try:
        run(station, HmiConfig(host="127.0.0.1", port=port, session_timeout_min=30, **tls))
    finally:
        station.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
