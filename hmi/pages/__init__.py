"""The HMI's pages. Each module has ``register(ctx)`` that adds its routes; pages only display
the state and send commands, they hold no station logic."""

from __future__ import annotations


def register_all(ctx) -> None:
    import importlib

    for name in ("login", "operator", "history", "charts", "recipes", "users"):
        try:
            module = importlib.import_module(f"hmi.pages.{name}")
        except ModuleNotFoundError:
            continue  # TEMP while pages land
        module.register(ctx)
