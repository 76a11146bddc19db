"""The producer's logger (`producers.identity_server`, whatever module logs), its set-up, and errors as one line."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("producers.identity_server")


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    log.setLevel(level.upper())
    if level.lower() != "debug":
        # kafka-python logs every refused connection itself; our own line says it once, with the retry.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
