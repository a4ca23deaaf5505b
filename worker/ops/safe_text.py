"""Bytes from a topic shown on a terminal: nothing in a record may move the cursor,
change colours or hide text, and a long value says how long it really is."""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape(text: str, backslashes: bool = True) -> str:
    """Printable characters (Norwegian letters included) as they are; anything else as
    an escape (\\n, \\x1b, \\u202e …). Without `backslashes`, a backslash stays one
    (for JSON text, whose own escapes must stay readable)."""
    out = []
    for ch in text:
        if ch == "\\" and not backslashes:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def safe_bytes(data: bytes | None, limit: int = 2000) -> str:
    """Undecodable bytes as \\xNN; cut at `limit` characters with the full length said."""
    if data is None:
        return "(null)"
    text = escape(data.decode("utf-8", "surrogateescape"))
    if len(text) > limit:
        return f"{text[:limit]}… ({len(data)} bytes, first {limit} characters shown)"
    return text
