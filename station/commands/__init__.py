"""Subcommand modules of `station` (one per area)."""
