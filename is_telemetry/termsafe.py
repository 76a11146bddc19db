"""Text from stored telemetry made safe to print: no byte of it can move the cursor, recolour, retitle or reorder a
terminal, whatever a sender put in a plan ID, a version or a command path.

Every character in Unicode's control, format and separator classes (Cc: C0 and C1 controls, ESC among them; Cf:
bidirectional overrides, zero-width characters; Zl, Zp; Cs: lone surrogates) is written as an escape: `\\x1b`,
`\\u202e`. An allowlist by class: a character is printed as itself only if its class is not one of these.
"""

from __future__ import annotations

import unicodedata

UNSAFE_CLASSES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, backslash: bool = False) -> str:
    """`text` with every unsafe character escaped (and backslashes doubled if `backslash`, for unambiguous text)."""
    if text.isascii() and text.isprintable() and not (backslash and "\\" in text):
        return text
    out = []
    for ch in text:
        if ch == "\\" and backslash:
            out.append("\\\\")
        elif unicodedata.category(ch) in UNSAFE_CLASSES:
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def json_printable(text: str) -> str:
    """JSON text with the unsafe characters JSON allows raw (C1 controls, format characters...) written as JSON's
    own escapes (`\\u202e`): the same JSON value, safe to print."""
    if text.isascii() and "\x7f" not in text:
        return text  # the encoder already escaped every other ASCII control (JSON leaves DEL raw)
    out = []
    for ch in text:
        if unicodedata.category(ch) in UNSAFE_CLASSES:
            code = ord(ch)
            if code >= 0x10000:  # a surrogate pair, as JSON writes characters beyond the BMP
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
