"""The demo's report opens in a real browser: headless Chromium renders it to a screenshot.

The screenshot is saved in the test's output folder, so a person can look at it too. Skipped,
with the reason, where no Chromium is installed (CI installs it; see ``.ci/run``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _colours(png: Path) -> set[tuple[int, int, int]]:
    image = pytest.importorskip("matplotlib.image").imread(png)
    rgb = (image[:, :, :3] * 255).round().astype(int).reshape(-1, 3)
    return {tuple(int(c) for c in pixel) for pixel in rgb[:: max(1, len(rgb) // 200_000)]}


def test_report_renders_in_headless_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium); the report is not rendered")
    pytest.importorskip("matplotlib", reason="the report's figures need the 'report' extra")
    out = tmp_path / "report"
    code = main(
        ["demo", "--nodes", "16", "--regions", "1", "--cells", "2", "--days", "3",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().out
    shot = tmp_path / "report-screenshot.png"
    done = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
            f"--screenshot={shot}", (out / "index.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    colours = _colours(shot)
    # The clean verdict's green band rendered (the page's CSS and content are there)…
    assert (0xD8, 0xEC, 0xD8) in colours
    # …and so did the figures: a clean report's page has no red band, its partition shading does.
    assert (0xF4, 0xD7, 0xD7) in colours
    assert len(colours) > 200  # a blank or error page has a handful of colours
