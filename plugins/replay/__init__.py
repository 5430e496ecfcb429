"""The ``replay`` plugin: ``ml-processing replay``, bars through the live path of an in-process service, and a
report of what it did (prequential accuracy, ensemble weights, throughput, latency).

One module per concern: `sources` (CSV and synthetic bars), `driver` (the in-process service and the
pub/sub replay), `tap` (what comes back), `progress` (the progress line), `report` (``report.json``'s
figures and the summary), `charts` (SVG), `page` (the self-contained ``report.html``) and `command` (the
options and the run). The plugin registers its command through ``register_commands``, as a third-party
plugin would.

>>> [command.name for command in register_commands()]
['replay']
"""

from __future__ import annotations

from collections.abc import Iterable

from ml_processing.sdk import hookimpl

from .command import COMMAND, Command

__all__ = ["register_commands"]


@hookimpl
def register_commands() -> Iterable[Command]:
    return [COMMAND]
