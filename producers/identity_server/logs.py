"""The producer's logger (`producers.identity_server`, whatever module logs) and errors as one line. Its set-up is
every command's (core/logsetup.py)."""

from __future__ import annotations

import logging

log = logging.getLogger("producers.identity_server")


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
