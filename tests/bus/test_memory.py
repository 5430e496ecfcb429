"""`retain_freed_memory`: glibc's malloc takes the settings; 0 leaves it alone.

What the settings save (page faults and time on large replies) is measured by bench/bench_indicators.py, not
asserted here: how often a process faults pages in depends on its whole allocation history.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ml_processing.bus.memory import retain_freed_memory


def test_zero_or_less_leaves_malloc_alone() -> None:
    assert retain_freed_memory(0) is False
    assert retain_freed_memory(-5) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings_in_a_client_process() -> None:
    child = ("import sys; from ml_processing.bus.memory import retain_freed_memory; "
             "sys.exit(0 if retain_freed_memory(256) else 1)")
    assert subprocess.run([sys.executable, "-c", child], timeout=120).returncode == 0
