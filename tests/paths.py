"""Where the repository is, for tests that read its committed files (docs, compose/, the schema)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
