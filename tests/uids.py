"""UIDs the tests give their deployments."""

from __future__ import annotations

from core.uid import uid_from_elements


def uid(name: str) -> str:
    return uid_from_elements([f"https://{name}.example.net/api/v3"] * 5)
