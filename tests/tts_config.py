"""TTS configuration files for the Identity Server producer, as a test writes them, and the UID its elements
`foo`, `bar` give."""

from __future__ import annotations

from pathlib import Path

FOO_BAR_UID = "wBs9NNSlIoSm2v/pcVCrI1j1UuOMFF36AFsiKszEq2r33ghp6MjSyxRci9Wqs5t3JkyLEUaouYHEO5gdyRFh3Q=="


def write_config(tmp_path: Path, text: str, name: str = "tts.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
