"""The HMI's pages. Each module has ``register(ctx)`` that adds its routes; pages only display
the state and send commands, they hold no station logic."""

from __future__ import annotations


def register_all(ctx) -> None:
    from station.hmi.pages import charts, history, login, operator, recipes, settings, users

    for module in (login, operator, history, charts, recipes, users, settings):
        module.register(ctx)
