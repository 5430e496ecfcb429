"""Plugin discovery, validation and reporting: built-in, config modules, entry points, broken plugins."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from ml_processing.bus import mdp
from ml_processing.core import hookspecs
from ml_processing.core.config import PluginSection, load_config
from ml_processing.core.errors import ConfigError, Unavailable
from ml_processing.core.kernel import Kernel
from ml_processing.sdk import hookspecs as sdk_hookspecs
from tests.conftest import make_config
from tests.core.helpers import discovered, released, running, write_module

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "ml_processing.plugins._template"

SPEC_MODULES = {"core": hookspecs, "sdk": sdk_hookspecs}
HOOKSPECS = sorted(name for module in SPEC_MODULES.values() for name, fn in vars(module).items()
                   if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def _spec(hook: str) -> object:
    return next(getattr(m, hook) for m in SPEC_MODULES.values() if hasattr(m, hook))


async def ask(kernel: Kernel, service: str, op: str, args: dict[str, object] | None = None) -> object:
    """One request over ZeroMQ, as a trading engine would send it."""
    client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
    try:
        return await client.request(service, op, args)
    finally:
        client.close()


# -- sources ------------------------------------------------------------------------------------------------


def test_builtin_kernel_plugin_is_listed_as_builtin(tmp_path: Path) -> None:
    with discovered(make_config(tmp_path, modules=())) as kernel:
        info = kernel.plugins.infos["kernel"]
        report = {p["name"]: p for p in kernel.plugins.report()}
    assert info.source == "builtin"
    assert info.module == "ml_processing.core.system"
    assert info.hooks == ["register_actors", "register_routes"]
    assert info.actors == ["kernel"]
    assert report["kernel"]["status"] == "loaded"
    assert list(report) == ["kernel", "sdk", "indicators", "features", "models", "patterns", "sentiment", "replay"]  # the built-ins, in their registration order


async def test_template_plugin_loads_from_config_modules(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, modules=(TEMPLATE,))) as kernel:
        info = kernel.plugins.infos["_template"]
        assert info.source == "config"
        assert info.module == TEMPLATE
        assert info.hooks == ["register_actors", "register_config_schemas", "register_routes"]
        assert info.actors == ["echo"]
        assert info.routes == ["POST /api/v1/echo"]
        assert info.error is None
        assert kernel.status == "healthy"
        assert await ask(kernel, "echo", "ping", {"name": "desk"}) == "pong, desk"


async def test_enabled_false_blocks_a_plugin(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=(TEMPLATE,), sections={"_template": PluginSection(enabled=False)})
    async with running(cfg) as kernel:
        info = kernel.plugins.infos["_template"]
        assert info.enabled is False
        assert info.as_dict()["status"] == "disabled"
        assert kernel.plugins.pm.is_blocked("_template")
        assert "echo" not in kernel.cells
        assert ("POST", "/api/v1/echo") not in {(r.method, r.path) for r in kernel.routes}
        with pytest.raises(Unavailable):
            await ask(kernel, "echo", "ping")
        assert kernel.status == "healthy"  # switched off on purpose is not a fault
        health = await ask(kernel, "kernel", "health")
    assert isinstance(health, dict)
    assert health["plugins"]["disabled"] == ["_template"]


# -- entry points -------------------------------------------------------------------------------------------

_ENTRY_POINT_PLUGIN = """
from ml_processing.sdk import Actor, hookimpl


class Auto(Actor):
    name = "auto"

    def handle_ping(self, args):
        return "auto-pong"


@hookimpl
def register_actors(settings):
    return [Auto]
"""


def _fake_distribution(folder: Path, *, entry: str = "fakeauto", module: str = "mlp_fakeauto") -> None:
    """An installed distribution as importlib.metadata sees it: a dist-info folder on sys.path."""
    dist = folder / "fake_auto-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-auto\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[ml_processing]\n{entry} = {module}\n", encoding="utf-8")
    write_module(folder, module, _ENTRY_POINT_PLUGIN)
    importlib.invalidate_caches()


def test_entry_point_plugins_load_when_autoload_is_on(plugin_dir: Path, tmp_path: Path) -> None:
    _fake_distribution(plugin_dir)
    with discovered(make_config(tmp_path, modules=(), autoload=True)) as kernel:
        info = kernel.plugins.infos["fakeauto"]
    assert info.source == "entrypoint (fake-auto 0.1)"
    assert info.module == "mlp_fakeauto"
    assert info.actors == ["auto"]


def test_autoload_false_skips_entry_points(plugin_dir: Path, tmp_path: Path) -> None:
    _fake_distribution(plugin_dir)
    with discovered(make_config(tmp_path, modules=(), autoload=False)) as kernel:
        assert "fakeauto" not in kernel.plugins.infos
        assert "auto" not in set(kernel.cells) and not any("auto" in i.actors for i in kernel.plugins.infos.values())
        assert list(kernel.plugins.infos) == ["kernel", "sdk", "indicators", "features", "models", "patterns", "sentiment", "replay"]


def test_mlp_disable_autoload_skips_entry_points(plugin_dir: Path, tmp_path: Path) -> None:
    _fake_distribution(plugin_dir)
    path = tmp_path / "plugins.toml"
    path.write_text("[plugins]\nautoload = true\n", encoding="utf-8")
    with discovered(load_config(path, environ={})) as kernel:
        assert "fakeauto" in kernel.plugins.infos
    with discovered(load_config(path, environ={"MLP_DISABLE_AUTOLOAD": "1"})) as kernel:
        assert "fakeauto" not in kernel.plugins.infos


def test_broken_entry_point_is_reported_by_name(plugin_dir: Path, tmp_path: Path) -> None:
    _fake_distribution(plugin_dir, entry="fakebroken", module="mlp_fake_missing_module")
    (plugin_dir / "mlp_fake_missing_module.py").unlink()
    with discovered(make_config(tmp_path, modules=(TEMPLATE,), autoload=True)) as kernel:
        info = kernel.plugins.infos["fakebroken"]
        assert info.source.startswith("entrypoint")
        assert info.error is not None and "import failed" in info.error
        assert kernel.plugins.infos["_template"].error is None


# -- broken plugins: reported by name, the service keeps running -------------------------------------------

_HEAD = """
from ml_processing.bus.edge.routes import Route
from ml_processing.sdk import Actor, hookimpl
"""

BROKEN: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "import_error": ('raise ImportError("acme needs libfoo")\n', ("import failed", "ImportError", "libfoo")),
    "syntax_error": ("def oops(:\n    pass\n", ("import failed", "SyntaxError")),
    "missing_module": (None, ("import failed", "ModuleNotFoundError")),
    "unknown_hook": (_HEAD + "@hookimpl\ndef register_widgets():\n    return []\n",
                     ("unknown hook", "register_widgets")),
    "extra_argument": (_HEAD + "@hookimpl\ndef register_actors(settings, portfolio):\n    return []\n",
                       ("register_actors", "portfolio")),
    "actors_raise": (_HEAD + "@hookimpl\ndef register_actors(settings):\n    raise RuntimeError('no licence')\n",
                     ("register_actors", "RuntimeError", "no licence")),
    "actors_not_actor": (_HEAD + "@hookimpl\ndef register_actors(settings):\n    return [object]\n",
                         ("not an Actor",)),
    "actors_unnamed": (_HEAD + "class Nameless(Actor):\n    pass\n\n"
                       "@hookimpl\ndef register_actors(settings):\n    return [Nameless]\n",
                       ("Nameless", "service name")),
    "route_taken": (_HEAD + "@hookimpl\ndef register_routes():\n"
                    "    return [Route('GET', '/api/v1/ping', 'kernel', 'ping', 'mine now')]\n",
                    ("already taken", "/api/v1/ping")),
    "routes_not_route": (_HEAD + "@hookimpl\ndef register_routes():\n    return ['GET /api/v1/mine']\n",
                         ("not a Route",)),
    "routes_raise": (_HEAD + "@hookimpl\ndef register_routes():\n    raise KeyError('table')\n",
                     ("register_routes", "KeyError")),
    "schemas_raise": (_HEAD + "@hookimpl\ndef register_config_schemas():\n    raise ValueError('nope')\n",
                      ("register_config_schemas", "ValueError")),
}

#: Hooks that return something unusable: each plugin is reported broken, never fatal to start-up.
MALFORMED: dict[str, tuple[str, tuple[str, ...]]] = {
    "actors_not_iterable": (_HEAD + "@hookimpl\ndef register_actors(settings):\n    return 42\n",
                            ("register_actors",)),
    "routes_not_iterable": (_HEAD + "@hookimpl\ndef register_routes():\n    return 42\n",
                            ("register_routes",)),
    "schemas_not_mapping": (_HEAD + "@hookimpl\ndef register_config_schemas():\n    return 42\n",
                            ("register_config_schemas",)),
    "schema_not_dataclass": (_HEAD + "@hookimpl\ndef register_config_schemas():\n"
                             "    return {'mlp_broken_schema_not_dataclass': int}\n",
                             ("register_config_schemas",)),
    "route_bad_path": (_HEAD + "@hookimpl\ndef register_routes():\n"
                       "    return [Route('GET', 'api/v1/no-slash', 'kernel', 'ping', 'bad path')]\n",
                       ("api/v1/no-slash",)),
}


async def _assert_reported_and_serving(kernel: Kernel, name: str, needles: tuple[str, ...]) -> None:
    info = kernel.plugins.infos[name]
    assert info.error is not None, f"{name} not reported broken"
    for needle in needles:
        assert needle in info.error, f"{needle!r} not in {info.error!r}"
    assert kernel.plugins.pm.get_plugin(name) is None  # unregistered: none of its hooks is called again
    assert info.as_dict()["status"] == "broken"
    assert kernel.state == "running"
    assert kernel.status == "degraded"
    assert await ask(kernel, "echo", "ping") == "pong"
    assert await ask(kernel, "kernel", "ping") == "pong"
    health = await ask(kernel, "kernel", "health")
    assert isinstance(health, dict)
    assert health["plugins"]["broken"][name] == info.error
    assert "_template" in health["plugins"]["loaded"]


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_broken_plugin_is_reported_and_the_service_keeps_running(plugin_dir: Path, tmp_path: Path,
                                                                       case: str) -> None:
    source, needles = BROKEN[case]
    name = f"mlp_broken_{case}"
    if source is not None:
        write_module(plugin_dir, name, source)
    async with running(make_config(tmp_path, modules=(TEMPLATE, name))) as kernel:
        await _assert_reported_and_serving(kernel, name, needles)
        assert kernel.plugins.infos[name].actors == [] and kernel.plugins.infos[name].routes == []


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_hook_results_are_reported_not_fatal(plugin_dir: Path, tmp_path: Path, case: str) -> None:
    source, needles = MALFORMED[case]
    name = f"mlp_broken_{case}"
    write_module(plugin_dir, name, source)
    async with running(make_config(tmp_path, modules=(TEMPLATE, name))) as kernel:
        await _assert_reported_and_serving(kernel, name, needles)


_IMPOSTOR = _HEAD + """
class Impostor(Actor):
    name = "{service}"

    def handle_ping(self, args):
        return "impostor"


@hookimpl
def register_actors(settings):
    return [Impostor]
"""


async def test_two_plugins_claiming_one_service_one_is_refused_by_name(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_dup_echo", _IMPOSTOR.format(service="echo"))
    async with running(make_config(tmp_path, modules=(TEMPLATE, "mlp_dup_echo"))) as kernel:
        infos = kernel.plugins.infos
        broken = [name for name in ("_template", "mlp_dup_echo") if infos[name].error]
        assert len(broken) == 1
        (loser,) = broken
        winner = "mlp_dup_echo" if loser == "_template" else "_template"
        assert "'echo'" in (infos[loser].error or "") and winner in (infos[loser].error or "")
        assert kernel.cells["echo"].plugin == winner
        assert kernel.status == "degraded"
        assert await ask(kernel, "kernel", "ping") == "pong"


async def test_first_plugin_keeps_its_service_and_the_later_claimant_is_refused(plugin_dir: Path,
                                                                                 tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_dup_echo", _IMPOSTOR.format(service="echo"))
    async with running(make_config(tmp_path, modules=(TEMPLATE, "mlp_dup_echo"))) as kernel:
        assert kernel.plugins.infos["_template"].error is None
        assert "already served" in (kernel.plugins.infos["mlp_dup_echo"].error or "")
        assert await ask(kernel, "echo", "ping") == "pong"


async def test_a_plugin_cannot_take_the_builtin_kernel_service(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_kernel_thief", _IMPOSTOR.format(service="kernel"))
    async with running(make_config(tmp_path, modules=(TEMPLATE, "mlp_kernel_thief"))) as kernel:
        assert kernel.plugins.infos["kernel"].error is None
        assert kernel.plugins.infos["mlp_kernel_thief"].error is not None
        assert await ask(kernel, "kernel", "ping") == "pong"


_ROUTE_PLUGIN = _HEAD + """
@hookimpl
def register_routes():
    return [Route("POST", "/api/v1/acme/shared", "{service}", "run", "shared path")]
"""


def test_route_claimed_twice_is_refused_for_the_later_plugin(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_route_first", _ROUTE_PLUGIN.format(service="first"))
    write_module(plugin_dir, "mlp_route_second", _ROUTE_PLUGIN.format(service="second"))
    with discovered(make_config(tmp_path, modules=("mlp_route_first", "mlp_route_second"))) as kernel:
        assert kernel.plugins.infos["mlp_route_first"].error is None
        assert "already taken" in (kernel.plugins.infos["mlp_route_second"].error or "")
        (route,) = [r for r in kernel.routes if r.path == "/api/v1/acme/shared"]
        assert route.service == "first"


def test_route_claimed_twice_is_served_once(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_route_first", _ROUTE_PLUGIN.format(service="first"))
    write_module(plugin_dir, "mlp_route_second", _ROUTE_PLUGIN.format(service="second"))
    with discovered(make_config(tmp_path, modules=("mlp_route_first", "mlp_route_second"))) as kernel:
        routes = [r for r in kernel.routes if r.path == "/api/v1/acme/shared"]
        errors = [kernel.plugins.infos[n].error for n in ("mlp_route_first", "mlp_route_second")]
    assert len(routes) == 1
    assert sum(e is not None for e in errors) == 1
    assert any("already taken" in (e or "") for e in errors)


async def test_a_plugin_refused_for_its_route_runs_no_actor(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_half", _HEAD + """
class Half(Actor):
    name = "half"

    def handle_ping(self, args):
        return "half"


@hookimpl
def register_actors(settings):
    return [Half]


@hookimpl
def register_routes():
    return [Route("GET", "/health", "half", "ping", "mine")]
""")
    async with running(make_config(tmp_path, modules=(TEMPLATE, "mlp_half"))) as kernel:
        assert kernel.plugins.infos["mlp_half"].error is not None
        assert "half" not in kernel.cells


# -- a plugin's own config section --------------------------------------------------------------------------


async def test_plugin_options_reach_the_actor(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=(TEMPLATE,),
                      sections={"_template": PluginSection(options={"greeting": "hi"})})
    async with running(cfg) as kernel:
        assert await ask(kernel, "echo", "ping") == "hi"
        assert await ask(kernel, "echo", "ping", {"name": "desk"}) == "hi, desk"


_TUNED = _HEAD + """
from dataclasses import dataclass


@dataclass(frozen=True)
class TunedConfig:
    threshold: float = 0.5
    symbols: tuple[str, ...] = ()


class Tuned(Actor):
    name = "tuned"

    def handle_settings(self, args):
        return {"threshold": self.config.threshold, "symbols": list(self.config.symbols)}


@hookimpl
def register_config_schemas():
    return {"mlp_tuned": TunedConfig}


@hookimpl
def register_actors(settings):
    return [Tuned]
"""


async def test_register_config_schemas_defaults_and_options(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_tuned", _TUNED)
    async with running(make_config(tmp_path, modules=("mlp_tuned",))) as kernel:
        assert await ask(kernel, "tuned", "settings") == {"threshold": 0.5, "symbols": []}
    cfg = make_config(tmp_path, modules=("mlp_tuned",), sections={
        "mlp_tuned": PluginSection(options={"threshold": 0.9, "symbols": ["AAPL", "MSFT"]})})
    async with running(cfg) as kernel:
        assert await ask(kernel, "tuned", "settings") == {"threshold": 0.9, "symbols": ["AAPL", "MSFT"]}


@pytest.mark.parametrize(("section", "key"), [
    pytest.param("[plugins._template]\ncolour = \"red\"\n", "colour", id="unknown-key"),
    pytest.param("[plugins._template]\ngreeting = \"\"\n", "greeting", id="bad-value"),
    pytest.param("[plugins._template]\ngreeting = 5\n", "greeting", id="wrong-type"),
    pytest.param("[plugins.kernel]\nverbose = true\n", "verbose", id="plugin-without-options"),
])
async def test_bad_plugin_options_stop_start_up(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "plugins.toml"
    path.write_text(f"[plugins]\nautoload = false\nmodules = [\"{TEMPLATE}\"]\n{section}", encoding="utf-8")
    plugin = "plugins._template" if "_template" in section else "plugins.kernel"
    with released(Kernel(load_config(path, environ={}))) as kernel, pytest.raises(ConfigError) as caught:
        await kernel.start()
    message = str(caught.value)
    assert "\n" not in message
    for needle in (plugin, key, str(path)):
        assert needle in message, f"{needle!r} not in {message!r}"


# -- every hook: documented, tested, and in docs/PLUGINS.md --------------------------------------------------


def test_hookspecs_are_found() -> None:
    assert {"register_config_schemas", "register_actors", "register_routes"} <= set(HOOKSPECS)


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_documented_with_its_parameters(hook: str) -> None:
    fn = _spec(hook)
    doc = inspect.getdoc(fn) or ""
    assert doc.strip(), f"hookspec {hook} has no docstring"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"hookspec {hook}: parameter {param!r} is not documented"
    assert ":return:" in doc, f"hookspec {hook}: the return value is not documented"


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_implemented_by_some_test(hook: str) -> None:
    tests = ROOT / "tests"
    pattern = re.compile(rf"def {hook}\(")
    users = [p for p in tests.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert users, f"no test implements hook {hook}"


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_in_docs_plugins(hook: str) -> None:
    doc = ROOT / "docs" / "PLUGINS.md"
    if not doc.exists():
        pytest.skip("docs/PLUGINS.md does not exist yet")
    assert f"{hook}" in doc.read_text(encoding="utf-8"), f"hook {hook} is missing from docs/PLUGINS.md"


STRATEGIES = """
from dataclasses import dataclass

from ml_processing.core.hookspecs import hookimpl, hookspec


class Specs:
    @hookspec
    def register_strategies():
        "Return strategies."


@dataclass(frozen=True)
class Strategy:
    name: str


@hookimpl
def register_hookspecs():
    return [Specs]


@hookimpl
def register_registries():
    return {"strategies": ("register_strategies", Strategy)}


@hookimpl
def register_strategies():
    return [Strategy("momentum")]
"""

USES_STRATEGIES = """
from ml_processing.sdk import hookimpl
from mlp_strategies import Strategy


@hookimpl
def register_strategies():
    return [Strategy("carry"), "not a strategy"]
"""


def test_a_plugin_declares_hooks_and_a_registry_that_later_plugins_fill(plugin_dir: Path, tmp_path: Path) -> None:
    write_module(plugin_dir, "mlp_strategies", STRATEGIES)
    write_module(plugin_dir, "mlp_uses_strategies", USES_STRATEGIES)
    cfg = make_config(tmp_path, modules=("mlp_strategies", "mlp_uses_strategies"))
    with discovered(cfg) as kernel:
        assert set(kernel.registries["strategies"]) == {"momentum"}
        assert "not an instance of Strategy" in (kernel.plugins.infos["mlp_uses_strategies"].error or "")
        assert kernel.plugins.infos["mlp_strategies"].error is None
        assert set(kernel.registries["indicators"])  # the SDK's registries are declared the same way
