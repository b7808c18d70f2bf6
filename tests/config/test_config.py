"""Tests for kitobs.config: sources, precedence, errors, and the generated reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kitobs import config
from kitobs.config import load
from kitobs.errors import ConfigError


def test_defaults_come_from_the_schema() -> None:
    settings = load(env={}, search=False)
    assert settings.log.level == "info"
    assert settings.log.format == "logfmt"
    assert settings.metrics.backend == ("prometheus",)
    assert settings.metrics.statsd.packet_size == 1432
    assert settings.tracing.zipkin.endpoint == "http://127.0.0.1:9411/api/v2/spans"
    assert settings.log.redact_keys == config.DEFAULT_REDACT_KEYS


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    file = tmp_path / "kitobs.toml"
    file.write_text(
        '[service]\nname = "shop"\nlabels = { env = "prod" }\n'
        '[log]\nlevel = "warn"\nformat = "json"\n'
        '[metrics.statsd]\naddress = "10.0.0.1:8125"\nflush_interval = 2.5\n'
    )
    env = {"KITOBS_LOG_LEVEL": "debug", "KITOBS_METRICS_STATSD_FLAVOR": "dogstatsd"}
    settings = load(file, env=env, overrides={"log.format": "logfmt"})
    assert settings.service.name == "shop"
    assert settings.service.labels == {"env": "prod"}
    assert settings.log.level == "debug"  # env beats file
    assert settings.log.format == "logfmt"  # override beats file
    assert settings.metrics.statsd.address == "10.0.0.1:8125"
    assert settings.metrics.statsd.flush_interval == 2.5
    assert settings.metrics.statsd.flavor == "dogstatsd"


def test_kitobs_config_variable_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "other.toml"
    file.write_text('[log]\nlevel = "error"\n')
    settings = load(env={"KITOBS_CONFIG": str(file)})
    assert settings.log.level == "error"


def test_search_finds_kitobs_toml_before_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.kitobs.log]\nlevel = "warn"\n')
    assert load(env={}).log.level == "warn"
    (tmp_path / "kitobs.toml").write_text('[log]\nlevel = "error"\n')
    assert load(env={}).log.level == "error"


def test_pyproject_without_kitobs_table_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load(env={}).log.level == "info"


def test_env_lists_and_labels_and_bools() -> None:
    env = {
        "KITOBS_METRICS_BACKEND": "statsd, prometheus",
        "KITOBS_SERVICE_LABELS": "env=prod, version=1.2",
        "KITOBS_LOG_CALLER": "yes",
        "KITOBS_METRICS_EXPVAR_QUANTILES": "0.5,0.99",
    }
    settings = load(env=env, search=False)
    assert settings.metrics.backend == ("statsd", "prometheus")
    assert settings.service.labels == {"env": "prod", "version": "1.2"}
    assert settings.log.caller is True
    assert settings.metrics.expvar.quantiles == (0.5, 0.99)


def test_otel_variables_apply_only_when_kitobs_ones_are_unset() -> None:
    env = {
        "OTEL_SERVICE_NAME": "from-otel",
        "OTEL_TRACES_SAMPLER": "TraceIdRatio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_PROPAGATORS": "b3multi,tracecontext",
    }
    settings = load(env=env, search=False)
    assert settings.tracing.service_name == "from-otel"
    assert settings.tracing.sampler == "traceidratio"
    assert settings.tracing.sampler_arg == 0.25
    assert settings.tracing.propagators == ("b3multi", "tracecontext")
    settings = load(env={**env, "KITOBS_TRACING_SERVICE_NAME": "mine"}, search=False)
    assert settings.tracing.service_name == "mine"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KITOBS_LOG_LEVEL": "loud"}, ["log.level", "KITOBS_LOG_LEVEL", "'loud'", "'debug'"]),
        ({"KITOBS_LOG_NOPE": "x"}, ["KITOBS_LOG_NOPE", "unknown"]),
        ({"KITOBS_METRICS_STATSD_PACKET_SIZE": "big"}, ["packet_size", "'big'", "integer"]),
        ({"KITOBS_METRICS_STATSD_PACKET_SIZE": "10"}, ["packet_size", "at least 64"]),
        ({"KITOBS_TRACING_SAMPLER_ARG": "1.5"}, ["sampler_arg", "from 0 to 1"]),
        ({"KITOBS_LOG_CALLER": "maybe"}, ["log.caller", "true or false"]),
        ({"KITOBS_METRICS_BACKEND": "graphite"}, ["metrics.backend", "'graphite'", "'statsd'"]),
        ({"KITOBS_SERVICE_LABELS": "env"}, ["service.labels", "name=value"]),
        ({"KITOBS_SERVICE_LABELS": "Env=x"}, ["service.labels", "snake_case"]),
        ({"KITOBS_METRICS_STATSD_FLUSH_INTERVAL": "nan"}, ["flush_interval", "finite"]),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, ["tracing.sampler", "OTEL_TRACES_SAMPLER"]),
    ],
)
def test_bad_environment_values_name_key_value_and_allowed(
    env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load(env=env, search=False)
    message = str(info.value)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[log]\nlevl = "debug"\n', ["log.levl", "unknown", "'level'"]),
        ('[logging]\nlevel = "debug"\n', ["logging", "unknown", "'log'"]),
        ("[log]\nlevel = 3\n", ["log.level", "string"]),
        ("[log]\ncaller = 1\n", ["log.caller", "boolean"]),
        ("[metrics]\nstatsd = 5\n", ["metrics.statsd", "section"]),
        ("[metrics.statsd]\npacket_size = 1.5\n", ["packet_size", "integer"]),
        ("[service]\nlabels = { env = [1] }\n", ["service.labels", "string value"]),
        ("[log\n", ["not valid TOML"]),
    ],
)
def test_bad_file_values(tmp_path: Path, text: str, words: list[str]) -> None:
    file = tmp_path / "kitobs.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    for word in words:
        assert word in str(info.value), str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml", env={})


def test_bad_override_key_and_value() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load(env={}, search=False, overrides={"log.colour": "red"})
    with pytest.raises(ConfigError, match=r"log\.level"):
        load(env={}, search=False, overrides={"log.level": "chatty"})


def test_defaults_argument_is_overridden_by_every_source() -> None:
    defaults = {"service.name": "demo", "log.level": "debug"}
    settings = load(env={"KITOBS_LOG_LEVEL": "warn"}, search=False, defaults=defaults)
    assert settings.service.name == "demo"
    assert settings.log.level == "warn"


def test_config_error_is_a_value_error_with_fields() -> None:
    with pytest.raises(ValueError, match=r"log\.level") as info:
        load(env={"KITOBS_LOG_LEVEL": "x"}, search=False)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.key == "log.level"
    assert err.variable == "KITOBS_LOG_LEVEL"
    assert err.value == "x"
    assert err.allowed == ("debug", "info", "warn", "error")


def test_every_key_has_help_and_a_unique_variable() -> None:
    infos = config.all_keys()
    variables = [info.variable for info in infos]
    assert len(set(variables)) == len(variables)
    for info in infos:
        assert info.doc, info.dotted
        assert info.variable == "KITOBS_" + info.dotted.replace(".", "_").upper()


def test_settings_are_frozen() -> None:
    settings = load(env={}, search=False)
    with pytest.raises(AttributeError):
        settings.log.level = "debug"  # type: ignore[misc]


def test_load_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITOBS_LOG_FORMAT", "json")
    assert load(search=False).log.format == "json"
    assert os.environ["KITOBS_LOG_FORMAT"] == "json"


def test_reference_in_docs_matches_the_schema() -> None:
    path = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert path.read_text() == config.reference(), (
        "docs/configuration.md is out of date: "
        "run `kitobs config reference > docs/configuration.md`"
    )


def test_reference_lists_every_key_with_default_and_variable() -> None:
    text = config.reference()
    for info in config.all_keys():
        assert f"| `{info.path[-1]}` |" in text
        assert f"`{info.variable}`" in text
    assert '| `level` | `"info"` | `KITOBS_LOG_LEVEL` |' in text


def test_choices_are_case_insensitive() -> None:
    settings = load(
        env={"KITOBS_LOG_LEVEL": "WARN", "KITOBS_METRICS_BACKEND": "Statsd"}, search=False
    )
    assert settings.log.level == "warn"
    assert settings.metrics.backend == ("statsd",)


def test_reference_in_readme_matches_the_schema() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- config-reference:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- config-reference:end -->")
    generated = config.reference().split("\n", 2)[2].strip("\n").replace("\n## [", "\n### [")
    assert readme[start:end].strip("\n") == generated, (
        "the configuration reference in README.md is out of date: regenerate it from "
        "`kitobs config reference` (sections as ### headings)"
    )


def test_transport_http_keys_from_the_environment() -> None:
    default = load(env={}, search=False).transport.http
    assert default.exclude_paths == ("/metrics", "/debug/vars")
    assert default.access_log is True
    settings = load(
        env={
            "KITOBS_TRANSPORT_HTTP_EXCLUDE_PATHS": "/metrics,/healthz",
            "KITOBS_TRANSPORT_HTTP_ACCESS_LOG": "false",
        },
        search=False,
    )
    assert settings.transport.http.exclude_paths == ("/metrics", "/healthz")
    assert settings.transport.http.access_log is False
