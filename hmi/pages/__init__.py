"""The HMI's pages. Each module has ``register(ctx)`` that adds its routes; pages only display
the state and send commands, they hold no station logic."""

from __future__ import annotations


def register_all(ctx) -> None:
    from station.hmi.pages import charts, history, login, operator, recipes, report, review, settings, users

    for module in (login, operator, review, history, charts, report, recipes, users, settings):
        module.register(ctx)
