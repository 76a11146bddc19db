"""The TTS sample bodies the tests use, byte for byte (tests/fixtures/tts-samples/, provenance in its README)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "fixtures" / "tts-samples"

#: file name -> body exactly as the sender POSTs it (the files end with one newline; the bodies do not).
SAMPLES: dict[str, bytes] = {p.name: p.read_bytes().rstrip(b"\n") for p in sorted(SAMPLES_DIR.glob("*.json"))}
