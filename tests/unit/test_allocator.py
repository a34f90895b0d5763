"""The gateway's allocator setting: large request buffers are reused, not mapped afresh each time."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Eight 1 MB buffers alive at once and then freed, as the bodies of a burst of uploads are.
BURST_OF_BODIES = """
import resource, sys
if sys.argv[1] == "tuned":
    from gateway.app import reuse_freed_buffers
    assert reuse_freed_buffers()
def burst():
    buffers = [bytearray(1 << 20) for _ in range(8)]
    del buffers
burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    burst()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(variant: str) -> int:
    """Page faults of 20 bursts in a fresh process (the setting is process-wide)."""
    done = subprocess.run([sys.executable, "-c", BURST_OF_BODIES, variant], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[2])
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is for glibc only")
def test_freed_body_buffers_are_reused_without_page_faults() -> None:
    pages = 20 * 8 * 256
    assert page_faults("default") > pages // 2  # glibc's default gives the pages back each time
    assert page_faults("tuned") < pages // 100
