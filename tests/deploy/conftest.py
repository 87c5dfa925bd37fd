"""Fixtures for deploy tests: the deploy/ folder and fake board files."""

from __future__ import annotations

from pathlib import Path

import pytest

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY_DIR


def write_compatible(path: Path, *entries: str) -> Path:
    """A /proc/device-tree/compatible look-alike: NUL-terminated strings, board first."""
    path.write_bytes(b"".join(e.encode() + b"\0" for e in entries))
    return path


def write_librknnrt(path: Path, version: str) -> Path:
    """A file carrying librknnrt's embedded version banner (the only part install.sh reads)."""
    path.write_bytes(b"\x7fELF\0padding\0librknnrt version: " + version.encode() + b" (0123abc@2025-04-01T10:00:00)\0tail")
    return path
