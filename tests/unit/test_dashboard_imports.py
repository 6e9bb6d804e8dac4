"""The dashboard ships as `shadoweval.dashboard`: its modules must import each other by that
name, not as a top-level `dashboard` package that exists only when the repository is the
working directory (streamlit started from elsewhere, or a non-editable install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = ("charts", "data", "formatting", "frames", "routing_frames", "ui")


def test_dashboard_modules_import_outside_the_repository(tmp_path: Path) -> None:
    code = "; ".join(f"import shadoweval.dashboard.{name}" for name in MODULES)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
