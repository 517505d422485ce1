"""A segment's build lock in Valkey: one build (or restore) of a segment at a time, across
processes. Held from the start of a build until its live pointer is switched; the API answers
a segment whose lock is held as ``building``. It expires after ``LOCK_SECONDS`` should its
holder die, and only the holder (its token) releases it."""

from __future__ import annotations

import secrets

import redis

from adtier.segments import store

__all__ = ["LOCK_SECONDS", "BuildBusy", "acquire", "release"]

LOCK_SECONDS = 3600


class BuildBusy(RuntimeError):
    """Another build of the segment holds its lock."""


def acquire(r: redis.Redis, segment_id: str) -> str | None:
    token = secrets.token_hex(8)
    return token if r.set(store.lock_key(segment_id), token, nx=True, ex=LOCK_SECONDS) else None


_RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
            "else return 0 end")


def release(r: redis.Redis, segment_id: str, token: str) -> None:
    r.eval(_RELEASE, 1, store.lock_key(segment_id), token)
