"""Settings come from the environment only; errors name the variable."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError

REQUIRED = {
    "DB_WRITE_DSN": "host=127.0.0.1 port=5439 dbname=appdb",
    "DB_READ_DSN": "host=127.0.0.1 port=5433 dbname=appdb",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_defaults():
    s = Settings.from_env(REQUIRED)
    assert (s.cache_enabled, s.cache_ttl_seconds, s.replica_down_policy, s.stale_fill_guard) == (True, 60, "fallback", True)
    assert (s.redis_timeout_ms, s.db_connect_timeout_s, s.db_pool_timeout_s, s.db_statement_timeout_ms) == (100, 2, 2.0, 2000)
    assert (s.breaker_failure_threshold, s.db_breaker_reset_seconds, s.redis_breaker_reset_seconds) == (3, 0.25, 2.0)
    # A probe is waited on for less than an attempt, so that one caught in an old HAProxy
    # process's retries does not hold writes back for a whole attempt after a reload.
    assert s.db_breaker_probe_seconds == 0.4 < s.db_attempt_timeout_s
    # A connection the API opens itself after a loss is not held to libpq's whole seconds.
    assert s.db_direct_connect_timeout_s == 0.4 < s.db_connect_timeout_s
    assert s.tracks_write_lsn


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_dsn_is_named(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


def test_blank_counts_as_missing():
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({**REQUIRED, "REDIS_URL": "  "})


@pytest.mark.parametrize("raw,value", [("on", True), ("OFF", False), ("true", True), ("0", False), ("yes", True)])
def test_booleans(raw, value):
    assert Settings.from_env({**REQUIRED, "STALE_FILL_GUARD": raw}).stale_fill_guard is value


@pytest.mark.parametrize(
    "name,raw",
    [
        ("CACHE_ENABLED", "maybe"),
        ("CACHE_TTL_SECONDS", "0"),
        ("CACHE_TTL_SECONDS", "1.5"),
        ("REPLICA_DOWN_POLICY", "ignore"),
        ("REDIS_TIMEOUT_MS", "-5"),
        ("DB_POOL_TIMEOUT_S", "nan"),
        ("BREAKER_FAILURE_THRESHOLD", "0"),
    ],
)
def test_bad_values_are_named(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**REQUIRED, name: raw})


def test_policy_and_breaker_overrides():
    s = Settings.from_env({**REQUIRED, "REPLICA_DOWN_POLICY": "Error", "BREAKER_RESET_SECONDS": "5"})
    assert s.replica_down_policy == "error"
    assert (s.db_breaker_reset_seconds, s.redis_breaker_reset_seconds) == (5.0, 5.0)
    s = Settings.from_env({**REQUIRED, "BREAKER_RESET_SECONDS": "5", "REDIS_BREAKER_RESET_SECONDS": "0.5"})
    assert (s.db_breaker_reset_seconds, s.redis_breaker_reset_seconds) == (5.0, 0.5)
    assert Settings.from_env({**REQUIRED, "DB_BREAKER_PROBE_SECONDS": "2.5"}).db_breaker_probe_seconds == 2.5


def test_connect_timeout_is_whole_seconds_as_libpq_wants():
    assert Settings.from_env({**REQUIRED, "DB_CONNECT_TIMEOUT_S": "1.5"}).db_connect_timeout_s == 2
    assert Settings.from_env({**REQUIRED, "DB_DIRECT_CONNECT_TIMEOUT_S": "0.15"}).db_direct_connect_timeout_s == 0.15


def test_guard_needs_the_cache():
    assert not Settings.from_env({**REQUIRED, "CACHE_ENABLED": "false"}).tracks_write_lsn


def test_redis_sentinels_are_parsed_and_checked():
    base = {"DB_WRITE_DSN": "x", "DB_READ_DSN": "y", "REDIS_URL": "redis://127.0.0.1:1/0"}
    settings = Settings.from_env({**base, "REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
                                  "REDIS_SENTINEL_MASTER": "cache"})
    assert settings.redis_sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380))
    assert settings.redis_sentinel_master == "cache"
    assert Settings.from_env(base).redis_sentinels == ()
    with pytest.raises(SettingsError, match="REDIS_SENTINELS"):
        Settings.from_env({**base, "REDIS_SENTINELS": "127.0.0.1"})
