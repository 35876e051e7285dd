"""Simultaneous rekeys (RFC 7296 §2.8.1): which of two crossing exchanges' results is redundant."""

from __future__ import annotations


def lowest_nonce_wins(ours: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """True when our exchange holds the lowest of the four nonces, i.e. *its* result is redundant.

    RFC 7296 §2.8.1 compares octet by octet and a nonce that is a prefix of another is lower:
    exactly Python's ordering of bytes."""
    return min(ours) < min(theirs)
