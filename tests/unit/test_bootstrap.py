"""Settings: the one reader of the environment. Every bad value is a ConfigError naming the
variable, the value and the fix; unset or empty variables take the documented defaults."""

from __future__ import annotations

import pytest

from rollout_core.bootstrap import Settings, error_telemetry
from rollout_core.errors import ConfigError


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.prometheus_url == "http://127.0.0.1:9090"
    assert settings.prometheus_timeout == 10.0
    assert settings.pushgateway_url == ""
    assert settings.dry_run is None
    assert settings.fetch_backoff_seconds == 0.5
    assert settings.audit_log_path == "rollout_log.md"
    assert settings.audit_retention == 100_000


def test_each_variable_reaches_its_field() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://10.0.0.5:6380/2",
            "PROMETHEUS_BASE_URL": "http://prom:9090",
            "PROMETHEUS_TIMEOUT_SECONDS": "2.5",
            "PUSHGATEWAY_URL": "http://pgw:9091",
            "ROLLOUT_DRY_RUN": "Off",
            "ROLLOUT_FETCH_BACKOFF_SECONDS": "0",
            "ROLLOUT_AUDIT_LOG": "/var/log/rollout.md",
            "ROLLOUT_AUDIT_RETENTION": "5000",
        }
    )

    assert settings.redis_url == "redis://10.0.0.5:6380/2"
    assert settings.prometheus_url == "http://prom:9090"
    assert settings.prometheus_timeout == 2.5
    assert settings.pushgateway_url == "http://pgw:9091"
    assert settings.dry_run is False
    assert settings.fetch_backoff_seconds == 0.0
    assert settings.audit_log_path == "/var/log/rollout.md"
    assert settings.audit_retention == 5000


def test_the_process_environment_is_read_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROLLOUT_DRY_RUN", "yes")
    monkeypatch.setenv("ROLLOUT_AUDIT_RETENTION", "")  # empty: the default

    settings = Settings.from_env()

    assert settings.dry_run is True and settings.audit_retention == 100_000


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ROLLOUT_DRY_RUN", "maybe", "ROLLOUT_DRY_RUN is 'maybe'; expected true or false"),
        (
            "ROLLOUT_AUDIT_RETENTION",
            "0",
            "ROLLOUT_AUDIT_RETENTION is '0'; expected a positive whole number",
        ),
        (
            "ROLLOUT_AUDIT_RETENTION",
            "1e5",
            "ROLLOUT_AUDIT_RETENTION is '1e5'; expected a positive whole number",
        ),
        (
            "PROMETHEUS_TIMEOUT_SECONDS",
            "-1",
            "PROMETHEUS_TIMEOUT_SECONDS is '-1'; expected a positive number of seconds",
        ),
        (
            "ROLLOUT_FETCH_BACKOFF_SECONDS",
            "soon",
            "ROLLOUT_FETCH_BACKOFF_SECONDS is 'soon'; expected a number of seconds >= 0",
        ),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL is 'http://cache:6379'; expected redis://"),
        (
            "PROMETHEUS_BASE_URL",
            "prom:9090",
            "PROMETHEUS_BASE_URL is 'prom:9090'; expected an http(s) URL",
        ),
        ("PUSHGATEWAY_URL", "pgw", "PUSHGATEWAY_URL is 'pgw'; expected an http(s) URL"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable_and_the_fix(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(message)


def test_a_redis_password_is_not_shown_in_the_error() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REDIS_URL": "http://default:s3cret@cache:6379"})
    assert "s3cret" not in str(raised.value)


def test_pushgateway_credentials_join_the_url_for_the_telemetry_adapter() -> None:
    settings = Settings.from_env(
        {
            "PUSHGATEWAY_URL": "http://pgw:9091",
            "PUSHGATEWAY_USERNAME": "ops",
            "PUSHGATEWAY_PASSWORD": "p@ss word",
        }
    )

    assert settings.pushgateway_target() == "http://ops:p%40ss%20word@pgw:9091"
    assert "p@ss" not in repr(settings)


def test_error_telemetry_is_wired_even_when_the_redis_url_is_bad() -> None:
    sink = error_telemetry({"REDIS_URL": "redis://127.0.0.1:notaport/0", "PUSHGATEWAY_URL": ""})

    assert sink is not None


def test_error_telemetry_is_none_when_the_pushgateway_url_is_bad() -> None:
    assert error_telemetry({"PUSHGATEWAY_URL": "pgw"}) is None
