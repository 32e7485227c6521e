"""Prefixed, time-sortable identifiers: ``usr_01JD8X...``.

The body is a ULID (48-bit millisecond timestamp + 80 random bits, Crockford base32),
so IDs sort by creation time, index well, and a prefix tells what a string names.
IDs use the wall clock, not the business :class:`~tollway.kit.clock.Clock`: they
order rows, they do not date them.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_PATTERN = re.compile(r"^[a-z]{2,6}_[0-9A-HJKMNP-TV-Z]{26}$")


def _encode(value: int) -> str:
    """The 130-bit ``value`` as 26 Crockford characters, ten bits (two characters) at a
    time: ids are made on every write, so this is on the hot path."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


# Randomness for ids (and request ids), read from the OS 4 KiB at a time: one
# system call per 400 ids instead of one per id. The pool is emptied in a forked
# child, which must not hand out the parent's bytes again.
_POOL_SIZE = 4096
_pool = b""
_taken = 0
_pool_lock = threading.Lock()


def random_bytes(count: int) -> bytes:
    """``count`` (at most 4 KiB) bytes from the OS's generator, taken from the pool."""
    global _pool, _taken
    with _pool_lock:
        if _taken + count > len(_pool):
            _pool, _taken = os.urandom(max(_POOL_SIZE, count)), 0
        chunk = _pool[_taken : _taken + count]
        _taken += count
    return chunk


def _random_80_bits() -> int:
    return int.from_bytes(random_bytes(10), "big")


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_id(prefix: str) -> str:
    """A fresh ID such as ``org_01JD8X3N5Q8W6Y2ZB4C7D9E0F1``."""
    if not (2 <= len(prefix) <= 6 and prefix.isalpha() and prefix.islower()):
        raise ValueError(f"ID prefix must be 2-6 lowercase letters, got {prefix!r}")
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode((millis << 80) | _random_80_bits())}"


def is_id(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` looks like an ID (with the given prefix, if any)."""
    if not _ID_PATTERN.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` fresh IDs at once, in increasing order (bulk inserts of many rows).

    They share one timestamp and the first 50 random bits; the last 40 bits start at a
    random point and count up, so each is as unique as :func:`new_id`'s and a batch
    costs one encoding of the shared head instead of ``count`` full encodings.
    """
    if count <= 0:
        return []
    head = new_id(prefix)[: len(prefix) + 1 + 18]
    start = secrets.randbits(40) % ((1 << 40) - count)
    pairs = _PAIRS
    return [
        head
        + pairs[(value >> 30) & 1023]
        + pairs[(value >> 20) & 1023]
        + pairs[(value >> 10) & 1023]
        + pairs[value & 1023]
        for value in range(start, start + count)
    ]


#: Every 10-bit value as two Crockford characters.
_PAIRS = [_CROCKFORD[high] + _CROCKFORD[low] for high in range(32) for low in range(32)]
_SHIFTS = tuple(range(120, -1, -10))
