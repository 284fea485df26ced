"""The per-scan HTML page (predict --report): content from the case report, readers' words, self-contained, and
what a browser shows (headless Chromium where installed)."""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_WORDS
from lung_nodule_mtl.reports.html import LIMITS, case_report_html, chest_side, write_case_report_html


def _report(n_nodules: int = 2) -> dict:
    nodules = [
        {
            "label": k + 1,
            "center_world_mm_ras": [30.0 * (-1) ** k, 5.0, -10.0],
            "center_world_mm_lps": [-30.0 * (-1) ** k, -5.0, -10.0],
            "center_voxel": [100, 120, 40],
            "diameter_mm": 12.34,
            "volume_mm3": 984.0,
            "detection_probability": 0.91,
            "malignancy_probability": 0.42,
            "malignancy_score": 3.2,
            "attributes": {"spiculation": 5, "texture": 1, "calcification": 6, "margin": 2},
        }
        for k in range(n_nodules)
    ]
    return {
        "case_id": "LIDC-IDRI-0001<b>",
        "input": "/data/scan.nii.gz",
        "input_kind": "nifti",
        "input_shape": [512, 512, 133],
        "nodules": nodules,
        "lung_volume_ml": 5230.4,
        "warnings": ["uneven slice gaps"],
        "model": {"bundle_name": "lung_nodule_mtl", "bundle_version": "0.5.0", "package_version": "0.1.0"},
        "disclaimer": "Research use only.",
    }


def test_the_page_says_what_the_report_says_in_the_readers_words() -> None:
    views = {1: np.zeros((8, 24, 3), np.uint8), 2: np.full((8, 24, 3), 200, np.uint8)}
    page = case_report_html(_report(), views, {1: "right", 2: "left"})
    assert "LIDC-IDRI-0001&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1].split("</h1>")[0]  # escaped
    assert html.escape(LIMITS) in page and "0.5.0" in page and "uneven slice gaps" in page
    first, second = page.split("<h2>Nodule 1</h2>")[1].split("<h2>Nodule 2</h2>")
    assert "right lung" in first and "left lung" in second
    assert "12.3 mm" in first and "0.42" in first and "not calibrated" in first
    assert "marked spiculation (5 of 5)" in first and "non-solid (ground glass) (1 of 5)" in first
    assert "absent (6 of 6)" in first and "near poorly defined (2 of 5)" in first
    assert first.count("n/a") >= 4  # subtlety, internal structure, sphericity, lobulation not given
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page and "http" not in page
    assert "(no views" in case_report_html(_report(1), {}, {})
    assert "No nodule above the operating point" in case_report_html(_report(0))


def test_every_rating_has_words_and_the_side_follows_the_lungs() -> None:
    for name, n in ATTRIBUTE_CLASSES.items():
        assert len(ATTRIBUTE_WORDS[name]) == n
    assert chest_side([40.0, 0, 0], [5.0, 0, 0]) == "right"  # RAS: x grows to the patient's right
    assert chest_side([-40.0, 0, 0], [5.0, 0, 0]) == "left"
    assert chest_side([1.0, 0, 0], None) is None


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="Chromium is not installed"
)
def test_a_browser_renders_the_page_not_blank(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    views = {k: rng.integers(0, 255, (64, 192, 3), dtype=np.uint8) for k in (1, 2)}
    page = write_case_report_html(tmp_path / "case_report.html", _report(), views, {1: "right", 2: "left"})
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,1400",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    dark = (rgb.sum(axis=-1) < 200).mean()  # text and the views
    assert 0.005 < dark < 0.9 and rgb.std() > 20  # something drawn, not blank and not all black
