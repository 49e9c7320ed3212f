"""The 3D viewer as a person sees it: write the page of a real scan (SemanticKITTI sequence 00
frame 0 from ../shared/data/real, else a generated scan), render it in headless Chromium (Debian
package `chromium`, software WebGL through SwiftShader) and save a screenshot; the canvas must not
be blank (colour variety of its pixels).

    python benchmarks/viewer_shot.py [--out docs/viewer.png] [--max-points 60000] [--width 1400 --height 760]

The "prediction" on the real scan is a stand-in for a model: every point of frame 0 takes the label
of the nearest point of frame 1 (same sequence, the car moved about 1 m; no pose correction), so the
errors are real disagreements at object borders and on moving things, not a drawn pattern.
Writes the page and timings to benchmarks/out/viewer/ and the PNG to --out.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REAL = REPO.parent / "shared" / "data" / "real" / "semantickitti"
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium_cmd(profile: str, width: int, height: int) -> list[str]:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium found (Debian: apt-get install chromium)")
    return [chromium, "--headless", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
            f"--user-data-dir={profile}", f"--window-size={width},{height}"]


def viewport_shortfall(width: int, height: int, timeout: float = 60.0) -> int:
    """Pixels by which headless Chromium's page viewport is shorter than --window-size (its window
    frame): a page sized to 100vh would leave that band of the screenshot empty."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text("<html><body><script>document.write('VIEWPORT=' + window.innerHeight + '=')</script></body></html>")
        proc = subprocess.run([*_chromium_cmd(str(Path(tmp) / "profile"), width, height), "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    found = re.search(r"VIEWPORT=(\d+)=", proc.stdout)
    return max(0, height - int(found.group(1))) if found else 0


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 760, wait_ms: int = 15000,
               timeout: float = 240.0) -> float:
    """Render `page` in headless Chromium and save a `width` x `height` PNG of its viewport; returns
    the seconds taken."""
    from PIL import Image

    extra = viewport_shortfall(width, height)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [*_chromium_cmd(profile, width, height + extra), f"--virtual-time-budget={wait_ms}",
               f"--screenshot={png}", page.resolve().as_uri()]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - start
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with Image.open(png) as im:
        shot = im.convert("RGB").crop((0, 0, width, height))
    shot.save(png)
    return seconds


def colour_variety(png: Path, box: tuple[float, float, float, float] = (0.0, 0.1, 1.0, 1.0)) -> dict:
    """Distinct colours (quantised to 4 bits per channel) and the share of non-background pixels
    inside `box` (fractions x0, y0, x1, y1 of the image)."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
    h, w, _ = img.shape
    x0, y0, x1, y1 = box
    crop = img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].reshape(-1, 3)
    q = crop >> 4
    codes = q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    background = values[np.argmax(counts)]
    return {"colours": int(len(values)), "non_background": float((codes != background).mean())}


def demo_scan() -> dict:
    """Points, labels and a nearest-neighbour "prediction" (see the module docstring)."""
    from scipy.spatial import cKDTree

    from balvit.data.labels import semantickitti_labels
    from balvit.data.semantickitti import SemanticKITTI

    spec = semantickitti_labels()
    if REAL.is_dir():
        reader = SemanticKITTI(REAL, "train", sequences=["00"])
        source = "SemanticKITTI 00/000000 (real scan)"
    else:
        from balvit.data.synthetic import generate

        root = Path(tempfile.mkdtemp(prefix="viewer_scan_"))
        generate("semantickitti", root, sequences=["00"], frames=2, seed=1, cameras=False, progress=False)
        reader = SemanticKITTI(root, "train", sequences=["00"])
        source = "generated SemanticKITTI-format scan"
    pts, lab = reader.load_points(0), reader.load_labels(0)
    ref_pts, ref_lab = reader.load_points(1), reader.load_labels(1)
    keep = ref_lab != 255
    _, nn = cKDTree(ref_pts[keep, :3]).query(pts[:, :3], k=1)
    pred = ref_lab[keep][nn]
    return {"points": pts, "labels": lab, "pred": pred, "spec": spec, "source": source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "viewer.png"))
    ap.add_argument("--max-points", type=int, default=60_000)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=760)
    ap.add_argument("--camera", default=None, help="initial camera preset (default: the viewer's)")
    ap.add_argument("--right", default="truth", choices=["truth", "errors"], help="what the right view shows")
    args = ap.parse_args()

    from balvit.viewer import write_scan_viewer

    out_dir = HERE / "out" / "viewer"
    scan = demo_scan()
    spec = scan["spec"]
    start = time.perf_counter()
    page = write_scan_viewer(out_dir / "scan.html", scan["points"], scan["pred"], scan["labels"], spec.class_names,
                             spec.colors, title=f"{scan['source']} · prediction: labels of the nearest point of frame 1",
                             max_points=args.max_points, camera=args.camera, right=args.right)
    write_s = time.perf_counter() - start
    raw_png = out_dir / "scan.png"
    render_s = screenshot(page, raw_png, args.width, args.height)
    variety = colour_variety(raw_png)
    from PIL import Image

    img = Image.open(raw_png).convert("RGB")
    small = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
    small = small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, optimize=True)
    result = {"source": scan["source"], "points": int(len(scan["points"])), "shown": min(args.max_points, len(scan["points"])),
              "page_mb": round(page.stat().st_size / 1e6, 2), "write_s": round(write_s, 2), "render_s": round(render_s, 1),
              "screenshot": str(out), "screenshot_kb": round(out.stat().st_size / 1024, 1), **variety}
    (out_dir / "viewer_shot.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
