"""plugins.toml into frozen config objects: defaults, the file, the environment, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ml_processing.core.config import (
    BusConfig,
    CacheConfig,
    Config,
    EdgeConfig,
    KernelConfig,
    ServiceConfig,
    build_section,
    load_config,
)
from ml_processing.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("service", "bus", "edge", "kernel", "cache", "plugins")


def write(tmp_path: Path, text: str, name: str = "plugins.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line(exc: ConfigError, *needles: str) -> None:
    """The message is a single line and names every needle (the key, the file or the variable)."""
    message = str(exc)
    assert message == exc.message
    assert "\n" not in message and "\r" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not named in {message!r}"


# -- defaults and the repository's plugins.toml -----------------------------------------------------------


def test_embedded_defaults_load_without_a_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg == Config()
    assert cfg.source == "<embedded defaults>"
    assert cfg.edge.port == 8006
    assert cfg.bus.broker_bind == ("tcp://127.0.0.1:5555",)
    assert cfg.plugins.autoload is True and cfg.plugins.modules == ()


def test_mlp_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[edge]\nport = 9123\n")
    cfg = load_config(None, environ={"MLP_CONFIG": str(path)})
    assert cfg.edge.port == 9123
    assert cfg.source == str(path)


@pytest.mark.parametrize("section", SECTIONS)
def test_repository_plugins_toml_documents_the_embedded_defaults(section: str) -> None:
    """Every value written in the shipped plugins.toml is the embedded default (it documents them)."""
    shipped = load_config(ROOT / "plugins.toml", environ={})
    if section != "plugins":
        assert getattr(shipped, section) == getattr(Config(), section)
        return
    assert (shipped.plugins.autoload, shipped.plugins.modules) == (True, ())
    from ml_processing.plugins.features.actor import FeaturesConfig
    from ml_processing.plugins.indicators.actor import IndicatorsConfig
    from ml_processing.plugins.models.actor import ModelsConfig
    from ml_processing.plugins.patterns.actor import PatternsConfig
    from ml_processing.plugins.replay.command import ReplayConfig
    from ml_processing.plugins.sentiment.actor import SentimentConfig

    plugin_defaults = {"indicators": IndicatorsConfig, "features": FeaturesConfig, "models": ModelsConfig,
                       "patterns": PatternsConfig, "sentiment": SentimentConfig, "replay": ReplayConfig}
    assert set(shipped.plugins.sections) <= set(plugin_defaults)
    for name, options in shipped.plugins.sections.items():
        assert build_section(plugin_defaults[name], options.options, "plugins.toml", name) == plugin_defaults[name]()


def test_repository_plugins_toml_lists_every_key_of_every_section() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "plugins.toml").read_text(encoding="utf-8"))
    classes = {"service": ServiceConfig, "bus": BusConfig, "edge": EdgeConfig, "kernel": KernelConfig,
               "cache": CacheConfig}
    for section, cls in classes.items():
        documented = set(data[section])
        declared = {f.name for f in dataclasses.fields(cls)}
        # log_json defaults to "auto" (None), which TOML cannot spell; every other key is written out.
        assert declared - documented <= {"log_json"}, (section, declared - documented)
        assert documented <= declared, (section, documented - declared)


# -- precedence: defaults < file < environment ------------------------------------------------------------


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[edge]\nport = 9001\nhost = \"0.0.0.0\"\n[cache]\nmodel_cache_size = 10\n")
    from_file = load_config(path, environ={})
    assert (from_file.edge.port, from_file.edge.host, from_file.cache.model_cache_size) == (9001, "0.0.0.0", 10)
    assert from_file.edge.max_body_mb == EdgeConfig().max_body_mb  # untouched keys keep their default

    both = load_config(path, environ={"MLP_EDGE_PORT": "9002", "MODEL_CACHE_SIZE": "20"})
    assert (both.edge.port, both.edge.host, both.cache.model_cache_size) == (9002, "0.0.0.0", 20)
    assert both.source == str(path)


def test_unrelated_environment_variables_are_ignored() -> None:
    """The seed's docker-compose environment, verbatim: OMP_NUM_THREADS is not ours and is no error."""
    env = {"ENV": "production", "LOG_LEVEL": "warning", "MODEL_CACHE_SIZE": "5000", "FEATURE_CACHE_TTL": "1800",
           "PREDICTION_CACHE_TTL": "300", "OMP_NUM_THREADS": "4", "PATH": "/usr/bin", "MLPX": "1"}
    cfg = load_config(None, environ=env)
    assert cfg.service.env == "production" and cfg.service.log_level == "warning"
    assert cfg.cache == CacheConfig(model_cache_size=5000, feature_cache_ttl=1800.0, prediction_cache_ttl=300.0)


@pytest.mark.parametrize(("var", "value", "section", "key", "expected"), [
    ("MODEL_CACHE_SIZE", "123", "cache", "model_cache_size", 123),
    ("FEATURE_CACHE_TTL", "60", "cache", "feature_cache_ttl", 60.0),
    ("PREDICTION_CACHE_TTL", "30.5", "cache", "prediction_cache_ttl", 30.5),
    ("LOG_LEVEL", "debug", "service", "log_level", "debug"),
    ("ENV", "production", "service", "env", "production"),
])
def test_every_seed_environment_variable_maps_to_its_key(var: str, value: str, section: str, key: str,
                                                         expected: Any) -> None:
    cfg = load_config(None, environ={var: value})
    got = getattr(getattr(cfg, section), key)
    assert got == expected and type(got) is type(expected)


def test_seed_variable_and_mlp_variable_for_the_same_key_agree_on_a_winner() -> None:
    """Both spellings set the key; whichever wins, the result is one of the two values, never an error."""
    cfg = load_config(None, environ={"LOG_LEVEL": "debug", "MLP_SERVICE_LOG_LEVEL": "error"})
    assert cfg.service.log_level in ("debug", "error")


@pytest.mark.parametrize(("var", "value", "section", "key", "expected"), [
    ("MLP_SERVICE_NAME", "ml-b", "service", "name", "ml-b"),
    ("MLP_SERVICE_DATA_DIR", "/srv/mlp", "service", "data_dir", "/srv/mlp"),
    ("MLP_SERVICE_LOG_JSON", "true", "service", "log_json", True),
    ("MLP_SERVICE_LOG_JSON", "auto", "service", "log_json", None),
    ("MLP_BUS_HEARTBEAT_MS", "250", "bus", "heartbeat_ms", 250),
    ("MLP_BUS_PUB_IN", "ipc:///tmp/mlp-in", "bus", "pub_in", "ipc:///tmp/mlp-in"),
    ("MLP_BUS_BROKER_BIND", "tcp://127.0.0.1:7001, tcp://127.0.0.1:7002", "bus", "broker_bind",
     ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")),
    ("MLP_EDGE_ENABLED", "0", "edge", "enabled", False),
    ("MLP_EDGE_PORT", "8010", "edge", "port", 8010),
    ("MLP_EDGE_MAX_BODY_MB", "1.5", "edge", "max_body_mb", 1.5),
    ("MLP_KERNEL_MAX_RESTARTS", "7", "kernel", "max_restarts", 7),
    ("MLP_KERNEL_UVLOOP", "off", "kernel", "uvloop", False),
    ("MLP_KERNEL_DRAIN_TIMEOUT_S", "2.5", "kernel", "drain_timeout_s", 2.5),
    ("MLP_CACHE_MODEL_CACHE_SIZE", "12", "cache", "model_cache_size", 12),
    ("MLP_CACHE_PREDICTION_CACHE_TTL", "7", "cache", "prediction_cache_ttl", 7.0),
])
def test_mlp_variables_override_every_section(var: str, value: str, section: str, key: str,
                                              expected: Any) -> None:
    cfg = load_config(None, environ={var: value})
    got = getattr(getattr(cfg, section), key)
    assert got == expected and type(got) is type(expected)


def test_mlp_variables_override_the_plugins_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins]\nautoload = true\nmodules = [\"x.y\"]\n")
    cfg = load_config(path, environ={"MLP_PLUGINS_AUTOLOAD": "0", "MLP_PLUGINS_MODULES": "a.b, c.d"})
    assert cfg.plugins.autoload is False
    assert cfg.plugins.modules == ("a.b", "c.d")


@pytest.mark.parametrize(("env", "needles"), [
    pytest.param({"MLP_PLUGINS_AUTOLAOD": "0"}, ("MLP_PLUGINS_AUTOLAOD",), id="unknown-key"),
    pytest.param({"MLP_PLUGINS_AUTOLOAD": "maybe"}, ("MLP_PLUGINS_AUTOLOAD", "autoload"), id="bad-bool"),
])
def test_plugins_environment_errors_name_the_variable(env: dict[str, str], needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=env)
    assert_one_line(caught.value, *needles)


def test_mlp_disable_autoload_turns_entry_points_off(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins]\nautoload = true\n")
    assert load_config(path, environ={}).plugins.autoload is True
    assert load_config(path, environ={"MLP_DISABLE_AUTOLOAD": "1"}).plugins.autoload is False
    assert load_config(path, environ={"MLP_DISABLE_AUTOLOAD": "0"}).plugins.autoload is True


def test_environment_override_is_checked_against_the_file_not_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[kernel]\nbackoff_max_s = 20.0\n")
    cfg = load_config(path, environ={"MLP_KERNEL_BACKOFF_INITIAL_S": "10"})
    assert (cfg.kernel.backoff_initial_s, cfg.kernel.backoff_max_s) == (10.0, 20.0)


def test_environment_cross_field_check_uses_the_merged_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[kernel]\nbackoff_initial_s = 1.0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"MLP_KERNEL_BACKOFF_MAX_S": "0.5"})
    assert_one_line(caught.value, "MLP_KERNEL_BACKOFF_MAX_S", "backoff")


# -- errors in the file: one line naming the key and the file ------------------------------------------------


@pytest.mark.parametrize(("text", "key"), [
    pytest.param("[colour]\nx = 1\n", "colour", id="unknown-section"),
    pytest.param("[edge]\ncolour = 1\n", "colour", id="unknown-key"),
    pytest.param("[edge]\nport = \"8006\"\n", "port", id="string-for-int"),
    pytest.param("[edge]\nenabled = 1\n", "enabled", id="int-for-bool"),
    pytest.param("[bus]\nbroker_bind = 1.5\n", "broker_bind", id="float-for-list"),
    pytest.param("[bus]\nbroker_bind = [5555]\n", "broker_bind", id="int-in-list"),
    pytest.param("[cache]\nfeature_cache_ttl = \"1h\"\n", "feature_cache_ttl", id="string-for-float"),
    pytest.param("[kernel]\nmax_restarts = true\n", "max_restarts", id="bool-for-int"),
    pytest.param("[kernel]\ndrain_timeout_s = [1.0]\n", "drain_timeout_s", id="list-for-float"),
    pytest.param("[service]\nlog_json = \"yes\"\n", "log_json", id="string-for-optional-bool"),
    pytest.param("[service]\nname = 3\n", "name", id="int-for-string"),
    pytest.param("edge = 5\n", "edge", id="section-not-a-table"),
    pytest.param("[edge]\nport = 70000\n", "port", id="port-70000"),
    pytest.param("[edge]\nport = -1\n", "port", id="port-negative"),
    pytest.param("[edge]\nmax_body_mb = 0\n", "max_body_mb", id="max-body-zero"),
    pytest.param("[service]\nlog_level = \"loud\"\n", "log_level", id="log-level-loud"),
    pytest.param("[service]\nname = \"\"\n", "name", id="empty-name"),
    pytest.param("[bus]\nheartbeat_ms = 1\n", "heartbeat_ms", id="heartbeat-1"),
    pytest.param("[bus]\nliveness = 0\n", "liveness", id="liveness-0"),
    pytest.param("[bus]\nhwm = 0\n", "hwm", id="hwm-0"),
    pytest.param("[bus]\nproxy = \"process\"\n", "proxy", id="proxy-unknown"),
    pytest.param("[kernel]\nbackoff_initial_s = 10.0\nbackoff_max_s = 1.0\n", "backoff", id="backoff-initial>max"),
    pytest.param("[kernel]\nthreads = 0\n", "threads", id="threads-0"),
    pytest.param("[kernel]\nmax_restarts = -1\n", "max_restarts", id="max-restarts-negative"),
    pytest.param("[plugins]\nmodules = \"my.plugin\"\n", "modules", id="modules-not-a-list"),
    pytest.param("[plugins]\nmodules = [\"\"]\n", "modules", id="modules-empty-path"),
    pytest.param("[plugins]\nautoload = \"yes\"\n", "autoload", id="autoload-string"),
    pytest.param("[plugins]\ncolour = 1\n", "colour", id="plugins-unknown-key"),
    pytest.param("[plugins.foo]\nenabled = \"no\"\n", "plugins.foo", id="plugin-enabled-string"),
])
def test_file_errors_are_one_line_naming_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert_one_line(caught.value, key, str(path))


@pytest.mark.parametrize(("text", "key"), [
    pytest.param("[kernel]\nbackoff_initial_s = 10.0\nbackoff_max_s = 1.0\n", "backoff_initial_s",
                 id="backoff"),
    pytest.param("[cache]\nfeature_cache_ttl = -1.0\n", "feature_cache_ttl",
                 id="ttl"),
    pytest.param("[bus]\npub_in = \"localhost:5556\"\n", "pub_in",
                 id="endpoint"),
    pytest.param("[bus]\nrequest_timeout_ms = 0\n", "request_timeout_ms", id="timeout"),
    pytest.param("[cache]\nmodel_cache_size = -1\n", "model_cache_size", id="cache-size"),
])
def test_value_errors_name_the_exact_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert_one_line(caught.value, key, str(path))


def test_unknown_quoted_key_with_a_newline_still_gives_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[edge]\n\"port\\nnext\" = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert_one_line(caught.value, str(path))


def test_invalid_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[edge\nport = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert_one_line(caught.value, str(path), "TOML")


def test_missing_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "plugins.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert_one_line(caught.value, str(path), "not found")


# -- errors in the environment: one line naming the variable -------------------------------------------------


@pytest.mark.parametrize(("env", "needles"), [
    pytest.param({"MLP_EDGE_PORT": "high"}, ("MLP_EDGE_PORT", "port"), id="int-not-a-number"),
    pytest.param({"MLP_EDGE_PORT": "70000"}, ("MLP_EDGE_PORT", "port"), id="port-70000"),
    pytest.param({"MLP_EDGE_ENABLED": "maybe"}, ("MLP_EDGE_ENABLED", "enabled"), id="bool"),
    pytest.param({"MLP_EDGE_COLOUR": "red"}, ("MLP_EDGE_COLOUR", "colour"), id="unknown-key"),
    pytest.param({"MLP_COLOUR_X": "1"}, ("MLP_COLOUR_X",), id="unknown-section"),
    pytest.param({"MLP_BUS_HEARTBEAT_MS": "1"}, ("MLP_BUS_HEARTBEAT_MS", "heartbeat_ms"), id="heartbeat-1"),
    pytest.param({"LOG_LEVEL": "loud"}, ("LOG_LEVEL", "log_level"), id="log-level"),
    pytest.param({"MODEL_CACHE_SIZE": "many"}, ("MODEL_CACHE_SIZE", "model_cache_size"), id="seed-int"),
    pytest.param({"FEATURE_CACHE_TTL": "1h"}, ("FEATURE_CACHE_TTL", "feature_cache_ttl"), id="seed-float"),
    pytest.param({"MLP_KERNEL_BACKOFF_INITIAL_S": "10"}, ("MLP_KERNEL_BACKOFF_INITIAL_S", "backoff"),
                 id="backoff-initial>max"),
])
def test_environment_errors_are_one_line_naming_the_variable(env: dict[str, str], needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=env)
    assert_one_line(caught.value, *needles)


# -- [plugins] and [plugins.NAME] --------------------------------------------------------------------------


def test_plugins_section_and_per_plugin_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins]\nautoload = false\nmodules = [\"a.b\", \"c.d\"]\n"
                           "[plugins.foo]\nenabled = false\n[plugins.bar]\nthreshold = 0.5\n")
    plugins = load_config(path, environ={}).plugins
    assert plugins.autoload is False
    assert plugins.modules == ("a.b", "c.d")
    assert plugins.enabled("foo") is False
    assert plugins.enabled("bar") is True
    assert plugins.enabled("never-mentioned") is True
    assert plugins.sections["bar"].options == {"threshold": 0.5}
    assert "enabled" not in plugins.sections["foo"].options


# -- frozen -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "key", "value"), [
    ("service", "log_level", "debug"), ("bus", "heartbeat_ms", 1), ("edge", "port", 1),
    ("kernel", "max_restarts", 0), ("cache", "model_cache_size", 0), ("plugins", "autoload", False),
])
def test_config_objects_are_frozen(section: str, key: str, value: Any) -> None:
    cfg = load_config(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(getattr(cfg, section), key, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.edge = EdgeConfig()  # type: ignore[misc]
    assert getattr(getattr(cfg, section), key) == getattr(getattr(Config(), section), key)


def test_list_values_are_immutable_tuples(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[plugins]\nmodules = [\"a.b\"]\n"), environ={})
    assert isinstance(cfg.bus.broker_bind, tuple)
    assert isinstance(cfg.plugins.modules, tuple)


def test_plugin_sections_cannot_be_mutated(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[plugins.foo]\nenabled = false\nx = 1\n"), environ={})
    with pytest.raises(TypeError):
        cfg.plugins.sections["foo"] = cfg.plugins.sections["foo"].__class__(enabled=True)  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.plugins.sections["foo"].options["x"] = 2  # type: ignore[index]
    assert cfg.plugins.enabled("foo") is False
