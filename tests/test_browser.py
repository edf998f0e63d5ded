"""The report renders in a real browser: headless Chromium loads every embedded image.

Run it with `python -m pytest tests/test_browser.py` (README: "The browser test").
Skipped when no Chromium is installed (/usr/bin/chromium, `chromium` or
`chromium-browser` on PATH; TRIPLETLAB_CHROMIUM=/path/to/chromium names another). The report itself has no script; the test
opens a copy with a small script that, on load, writes how many images decoded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.build import write_report
from test_reports_units import fake_view

CANDIDATES = (os.environ.get("TRIPLETLAB_CHROMIUM", ""), "/usr/bin/chromium", "chromium",
              "chromium-browser")
CHROMIUM = next((path for path in map(shutil.which, filter(None, CANDIDATES)) if path), None)
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var marker = document.createElement("p");
  marker.id = "probe";
  marker.textContent = "IMAGES-LOADED " + ok + "/" + images.length;
  document.body.appendChild(marker);
});
</script>
"""

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]


def test_every_image_of_the_report_loads_in_headless_chromium(tmp_path):
    from test_reports_layout import linear_projection

    page = write_report(fake_view(seeds=(0, 1)), tmp_path / "report", umap_epochs=20,
                        umap_max_points=60, random_state=0, max_curve_points=50,
                        umap_project=linear_projection).read_text()
    n_images = page.count("<img ")
    assert n_images >= 8
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
               "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r"IMAGES-LOADED (\d+)/(\d+)", done.stdout)
    assert found, f"no probe marker in the DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    assert (int(found.group(1)), int(found.group(2))) == (n_images, n_images)


LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var width = document.documentElement.clientWidth, wide = [], images = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.getBoundingClientRect();
    if (box.right > width + 1 && !el.closest(".scroll") && !el.closest("pre")) {
      wide.push(el.tagName + (el.id ? "#" + el.id : "") + " " + Math.round(box.right));
    }
  });
  document.querySelectorAll("figure img").forEach(function (img) {
    var box = img.getBoundingClientRect();
    images.push({alt: img.alt, width: Math.round(box.width), height: Math.round(box.height),
                 natural: img.naturalWidth});
  });
  var marker = document.createElement("pre");
  marker.id = "probe";
  marker.textContent = "LAYOUT " + JSON.stringify({viewport: width, wide: wide, images: images});
  document.body.appendChild(marker);
});
</script>
"""


def test_a_demo_sized_report_reads_at_1400_px(tmp_path):
    """36 classes, 11 trained variants and the baselines (tests/test_reports_layout.py wide_view,
    UMAP replaced by a linear projection): at a 1400 px wide window no element is wider than the
    window outside a scroll box, every figure is within sane bounds, and the UMAP figure's first
    panel is the best variant's."""
    import json

    import pandas as pd

    from test_reports_layout import linear_projection, wide_view

    out = tmp_path / "report"
    page = write_report(wide_view(11, 36), out, umap_epochs=5, umap_max_points=1000,
                        random_state=0, max_curve_points=20,
                        umap_project=linear_projection).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", LAYOUT_PROBE + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r"LAYOUT (\{.*?\})</pre>", done.stdout, re.S)
    assert found, f"no probe marker in the DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert 1300 <= layout["viewport"] <= 1400
    assert layout["wide"] == []
    assert len(layout["images"]) == page.count("<figure><img")
    for image in layout["images"]:
        assert image["natural"] > 0, image["alt"]
        assert 300 <= image["width"] <= layout["viewport"], image
        assert 120 <= image["height"] <= 3000 and image["height"] <= 4 * image["width"], image
    board = pd.read_csv(out / "tables" / "leaderboard.csv")
    best = board.loc[board["kind"] == "variant", "variant"].iloc[0]
    umap = [i for i in layout["images"] if i["alt"].startswith("UMAP panels")]
    assert len(umap) == 1 and umap[0]["alt"].startswith(f"UMAP panels, in order: {best}; ")
    assert umap[0]["alt"].count("(baseline)") == 2
