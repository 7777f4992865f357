"""The report opens in headless Chromium from disk (no server) and renders something (slow)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normlab.report import run_and_report

sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))
from toy_study import ToyConfig, ToyStudy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_screenshot_in_headless_chromium_is_not_blank(tmp_path):
    import matplotlib.image as mpimg

    out = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "run")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--window-size=1200,1600", f"--screenshot={shot}", out.report.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # Not blank: many distinct colors, a real share of non-white pixels (text, tables, the figure).
    non_white = (img < 0.95).any(axis=-1).mean()
    assert non_white > 0.02, f"only {non_white:.1%} of the screenshot is not white"
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def _rendered_text(report: Path, tmp_path: Path) -> str:
    """The page's DOM after Chromium rendered it (``--dump-dom``), as text."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--dump-dom", report.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert "<body" in done.stdout, f"chromium rendered nothing: {done.stderr[-500:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
@pytest.mark.parametrize("steps, seeds, smoke", [
    (10, 4, True),  # the quick preset
    (40, 4, False),  # a default-like run
    (12, 1, False),  # one seed: no interval, an inconclusive claim without a statistic
])
def test_rendered_report_has_its_banner_its_bottom_line_and_no_nan(tmp_path, steps, seeds, smoke):
    import re

    out = run_and_report(ToyStudy(), ToyConfig(steps=steps, seeds=seeds), tmp_path / "run")
    dom = _rendered_text(out.report, tmp_path)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"src='data:[^']*'|src=\"data:[^\"]*\"", "", dom))
    assert ("id=\"smoke-test\"" in dom) == smoke
    assert "Bottom line" in text and text.index("Bottom line") < text.index("Claims")
    assert not re.search(r"\b(nan|NaN|inf|-inf)\b", text), "a number reads nan or inf"
