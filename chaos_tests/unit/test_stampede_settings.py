"""The settings added for stampede protection and the Redis client."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError

REQUIRED = {"DB_WRITE_DSN": "x", "DB_READ_DSN": "x", "REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_defaults_protect_and_use_the_lean_client():
    s = Settings.from_env(REQUIRED)
    assert (s.stampede_protection, s.stampede_lock_ttl_ms, s.stampede_poll_ms, s.xfetch_beta) == (True, 3000, 10, 1.0)
    assert s.redis_client == "lean"
    # A live lock holder finishes (or gives up) one database attempt before its lock expires.
    assert s.stampede_lock_ttl_ms / 1000 > s.db_attempt_timeout_s


def test_each_can_be_set():
    s = Settings.from_env({**REQUIRED, "STAMPEDE_PROTECTION": "off", "STAMPEDE_LOCK_TTL_MS": "500",
                           "STAMPEDE_POLL_MS": "2", "XFETCH_BETA": "0", "REDIS_CLIENT": "redis-py"})
    assert (s.stampede_protection, s.stampede_lock_ttl_ms, s.stampede_poll_ms, s.xfetch_beta) == (False, 500, 2, 0.0)
    assert s.redis_client == "redis-py"


@pytest.mark.parametrize("name, value", [("STAMPEDE_PROTECTION", "maybe"), ("STAMPEDE_LOCK_TTL_MS", "0"),
                                         ("STAMPEDE_POLL_MS", "fast"), ("XFETCH_BETA", "-1"),
                                         ("XFETCH_BETA", "nan"), ("REDIS_CLIENT", "hiredis")])
def test_bad_values_are_named(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**REQUIRED, name: value})
