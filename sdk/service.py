"""Running the whole service in-process, for the few plugin parts that must: a command that drives a
private service (``ml-processing replay``) and generators of reference docs that read what a real kernel
registers. Actors never need this: they reach other services over the bus.
"""

from __future__ import annotations

from ml_processing.core.config import load_config
from ml_processing.core.kernel import Kernel
from ml_processing.core.log import configure as configure_logging

__all__ = ["Kernel", "configure_logging", "load_config"]
