"""The audit log: who did what to which target, before and after (table ``audit_log``).

Written by the station (recipe switches from the PLC or at start-up) and by the HMI (logins,
users, recipe versions, reviews). One short transaction per entry.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert

from station.db.models import AuditLogRow


class AuditLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, actor: str, action: str, target: str = "", before: str | None = None, after: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(AuditLogRow.__table__).values(actor=actor, action=action, target=target, before=before,
                                                              after=after))
