"""The ``replay`` plugin: ``ml-processing replay``, bars through the live path of an in-process service, and a
report of what it did (prequential accuracy, ensemble weights, throughput, latency).

One module per concern: `sources` (CSV and synthetic bars), `driver` (the in-process service and the
pub/sub replay), `tap` (what comes back), `progress` (the progress line), `report` (``report.json``'s
figures and the summary), `trading` (what the signals would have earned: positions, costs, equity, returns, Sharpe, Sortino,
drawdown, beside buy-and-hold), `charts` (SVG), `page` (the self-contained ``report.html``) and `command`
(the options and the run). The plugin registers its command through ``register_commands`` and its
``[plugins.replay]`` section (`ReplayConfig`: the trading figures' defaults) through
``register_config_schemas``, as a third-party plugin would.

>>> [command.name for command in register_commands()], register_config_schemas()
(['replay'], {'replay': <class 'ml_processing.plugins.replay.command.ReplayConfig'>})
"""

from __future__ import annotations

from collections.abc import Iterable

from ml_processing.sdk import hookimpl

from .command import COMMAND, Command, ReplayConfig

__all__ = ["register_commands", "register_config_schemas"]


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"replay": ReplayConfig}


@hookimpl
def register_commands() -> Iterable[Command]:
    return [COMMAND]
