"""One demo per data dir: a second one is refused, before it touches the first one's
broker or database; the lock goes with the process that held it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.demo import DemoError, DemoOptions, DemoStack


def test_a_second_demo_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = DemoStack(DemoOptions(data_dir=tmp_path))
    first._lock_data_dir()
    second = DemoStack(DemoOptions(data_dir=tmp_path))
    with pytest.raises(DemoError, match=rf"another `fleet demo` \(pid {os.getpid()}\)"):
        second._lock_data_dir()
    assert first._lock is not None
    first._lock.close()  # what the kernel does when the first demo's process ends
    second._lock_data_dir()  # taken over
    DemoStack(DemoOptions(data_dir=tmp_path / "other"))._lock_data_dir()  # other dirs: fine
