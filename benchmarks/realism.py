"""How real does the synthetic world look? Generated SemanticKITTI scans against real HDL-64E scans.

    python benchmarks/realism.py [--real ROOT/sequences/00] [--label after] [--frames 3] [--out benchmarks/out/realism.json]
        [--quick]

Reference: the real SemanticKITTI scans under ../shared/data/real/semantickitti (sequence 00,
frames 0-2, official labels; Behley et al., ICCV 2019, the KITTI odometry HDL-64E recordings).
Compared, figure by figure, with `--frames` scans of the generator as this checkout has it
(`balvit generate --format semantickitti`, full HDL-64E resolution, sequence 00, seed 0), stored in
the JSON under `--label` ("before" / "after" a generator change; other labels already in the file
are kept, so RESULTS.md can show real | before | after):

1. range image 64 x 2048 (+3 / -25 deg, the projection of balvit/geometry.py): empty-pixel fraction
   overall and per row, points hidden behind a closer point of the same pixel; the ego shadow
   (returns within 3 m horizontally, median over 1-degree azimuth sectors of the nearest return's
   horizontal distance, empty fraction of the 4 lowest rows);
2. per-beam elevation angles: every scan is cut into its rings by the unwrapped azimuth (KITTI
   stores the points ring by ring, every ring one revolution from where the scan starts), each
   ring's elevation = the median of atan2(z, hypot(x, y)) of its points beyond 2.5 m; the real
   sensor's 64 values are the medians over the real frames (ring_elevations);
3. range and remission distributions per class (10 / 50 / 90 % quantiles);
   and the share of returns with remission 0 per class;
4. class frequencies per scan (% of the points, 19 SemanticKITTI classes + ignored);
5. height and horizontal-distance profiles of road, sidewalk, building, vegetation, car, terrain,
   pole and trunk (10 / 50 / 90 % quantiles of z and of hypot(x, y)).

A figure (benchmarks/out/realism.png) draws rows, elevations, class mix and remission medians.
--quick: 1 generated scan at 16 x 256, no real data needed (a real frame is used when present).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, md_table, notes_md, write_json  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real" / "semantickitti" / "sequences" / "00"
MAIN_CLASSES = ("road", "sidewalk", "building", "vegetation", "car", "terrain", "pole", "trunk")
H, W, FOV_UP, FOV_DOWN = 64, 2048, 3.0, -25.0


# ----------------------------------------------------------------------------- reading


def read_scans(seq_dir: Path, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(points (N, 4) float32, train ids (N,) int64 with 255 = ignored)] of the first `frames` scans."""
    from balvit.data.labels import labels_for

    spec = labels_for("semantickitti")
    out = []
    files = sorted((seq_dir / "velodyne").glob("*.bin"))[:frames]
    if not files:
        raise SystemExit(f"{seq_dir / 'velodyne'}: no scans")
    for f in files:
        pts = np.fromfile(f, dtype=np.float32).reshape(-1, 4)
        lab_file = seq_dir / "labels" / (f.stem + ".label")
        raw = np.fromfile(lab_file, dtype=np.uint32) & 0xFFFF
        if len(raw) != len(pts):
            raise SystemExit(f"{lab_file}: {len(raw)} labels for {len(pts)} points")
        out.append((pts, spec.to_train(raw, lab_file)))
    return out


# ----------------------------------------------------------------------------- figures


def range_image_stats(pts: np.ndarray) -> dict:
    from balvit.geometry import pixel_of, spherical_coords

    _, row_f, col_f = spherical_coords(pts, H, W, FOV_UP, FOV_DOWN)
    row, col = pixel_of(row_f, col_f, H, W).T
    occ = np.zeros((H, W), bool)
    occ[row, col] = True
    rho = np.hypot(pts[:, 0], pts[:, 1])
    sector = ((np.arctan2(pts[:, 1], pts[:, 0]) + np.pi) / (2 * np.pi) * 360).astype(np.int64).clip(0, 359)
    nearest = np.full(360, np.nan)
    np.fmin.at(nearest, sector, rho)
    pitch = np.degrees(np.arctan2(pts[:, 2], rho))
    return {"empty": float(1 - occ.mean()), "row_empty": (1 - occ.mean(1)).tolist(), "hidden": int(len(pts) - occ.sum()),
            "points": int(len(pts)), "within_3m": int((rho < 3.0).sum()), "nearest_median_m": float(np.nanmedian(nearest)),
            "bottom4_empty": float(1 - occ[-4:].mean()), "outside_fov": int(((pitch > FOV_UP) | (pitch < FOV_DOWN)).sum())}


def ring_elevations(pts: np.ndarray) -> list[float]:
    """Elevation (deg) of every ring, top ring first. KITTI stores a scan ring by ring, each ring one
    revolution that starts where the scan starts: the unwrapped azimuth, counted from the first point,
    gives each point's ring (floor(progress / 2 pi)); a ring's elevation is the median of
    atan2(z, hypot(x, y)) of its points beyond 2.5 m."""
    yaw = np.unwrap(np.arctan2(pts[:, 1], pts[:, 0]).astype(np.float64))
    progress = (yaw - yaw[0]) * np.sign(yaw[-1] - yaw[0])
    ring = np.floor(progress / (2 * np.pi) + 1e-3).astype(np.int64)
    rho = np.hypot(pts[:, 0], pts[:, 1])
    pitch = np.degrees(np.arctan2(pts[:, 2], rho))
    el = []
    for k in range(int(ring.max()) + 1):
        m = (ring == k) & (rho > 2.5)
        if m.sum() >= 10:
            el.append(float(np.median(pitch[m])))
    return sorted(el, reverse=True)


def quantiles(v: np.ndarray) -> list[float] | None:
    return [float(q) for q in np.quantile(v, [0.1, 0.5, 0.9])] if len(v) >= 10 else None


def scan_set_stats(scans: list[tuple[np.ndarray, np.ndarray]], names: tuple[str, ...]) -> dict:
    """Every figure over a set of scans (range-image figures per scan, distributions pooled)."""
    C = len(names)
    ri = [range_image_stats(p) for p, _ in scans]
    elevs = [ring_elevations(p) for p, _ in scans]
    n_el = min(len(e) for e in elevs)
    elev = np.array([e[:n_el] for e in elevs])
    pts = np.concatenate([p for p, _ in scans])
    lab = np.concatenate([lb for _, lb in scans])
    rng_all = np.linalg.norm(pts[:, :3], axis=1)
    rho = np.hypot(pts[:, 0], pts[:, 1])
    counts = np.bincount(np.where(lab == 255, C, lab), minlength=C + 1)
    per_class = {}
    for c, n in enumerate(names):
        m = lab == c
        per_class[n] = {"share": float(m.mean() * 100), "range": quantiles(rng_all[m]), "remission": quantiles(pts[m, 3]),
                        "zero_remission": float((pts[m, 3] <= 1e-3).mean() * 100) if m.any() else None,
                        "z": quantiles(pts[m, 2]), "distance": quantiles(rho[m])}
    return {
        "scans": len(scans),
        "points_per_scan": float(np.mean([r["points"] for r in ri])),
        "empty": float(np.mean([r["empty"] for r in ri])),
        "row_empty": np.mean([r["row_empty"] for r in ri], axis=0).tolist(),
        "hidden": float(np.mean([r["hidden"] for r in ri])),
        "within_3m": float(np.mean([r["within_3m"] for r in ri])),
        "nearest_median_m": float(np.mean([r["nearest_median_m"] for r in ri])),
        "bottom4_empty": float(np.mean([r["bottom4_empty"] for r in ri])),
        "outside_fov": float(np.mean([r["outside_fov"] for r in ri])),
        "elevations": np.nanmedian(elev, axis=0).tolist() if elev.ndim == 2 else [],
        "remission_all": quantiles(pts[:, 3]),
        "zero_remission": float((pts[:, 3] <= 1e-3).mean() * 100),
        "ignored_share": float(counts[C] / counts.sum() * 100),
        "classes": per_class,
    }


def generated_scans(out: Path, frames: int, quick: bool) -> tuple[list, dict]:
    from balvit.data.synthetic import generate

    root = out / "realism_generated"
    if root.exists():
        import shutil

        shutil.rmtree(root)
    t0 = time.time()
    info = generate("semantickitti", root, sequences=["00"], frames=frames, seed=0, cameras=False, progress=False,
                    beams=16 if quick else None, azimuth_steps=256 if quick else None)
    info = {"seconds_per_scan": (time.time() - t0) / frames, "lidar_seconds_per_scan": info["lidar_seconds_per_scan"]}
    return read_scans(root / "sequences" / "00", frames), info


# ----------------------------------------------------------------------------- report


def _fmt_q(q: list[float] | None, digits: int = 1) -> str:
    return "-" if q is None else f"{q[1]:.{digits}f} ({q[0]:.{digits}f}-{q[2]:.{digits}f})"


def markdown(d: dict, plot_link: str | None = None) -> str:
    sets = {"real": d["real"], **d["generated"]}
    names = list(sets)
    lines = [f"Real: {d['real_source']} ({d['real']['scans']} scans). Generated: `balvit generate --format semantickitti` "
             f"(its default full-size HDL-64E model, sequence 00, seed 0, {next(iter(d['generated'].values()))['scans']} scans "
             "per label; `before`: 64 beams +2..-24.8 deg, 2048 azimuth steps; `after`: the real beam table, 2160 steps) "
             "as the code stood at each label. Range image 64 x 2048 over +3 / -25 deg. Generation time per scan (LiDAR only, "
             "busy machine): " + ", ".join(f"{k} {v['timing']['seconds_per_scan']:.2f} s" for k, v in d["generated"].items()
                                           if v.get("timing")) + ".", ""]
    rows = [
        ["points per scan"] + [s["points_per_scan"] for s in sets.values()],
        ["empty pixels %"] + [100 * s["empty"] for s in sets.values()],
        ["points hidden behind a closer one"] + [s["hidden"] for s in sets.values()],
        ["returns within 3 m (horizontal)"] + [s["within_3m"] for s in sets.values()],
        ["nearest return per 1-deg sector, median m (ego shadow)"] + [s["nearest_median_m"] for s in sets.values()],
        ["empty % of the 4 lowest rows"] + [100 * s["bottom4_empty"] for s in sets.values()],
        ["points outside +3 / -25 deg"] + [s["outside_fov"] for s in sets.values()],
        ["ignored (unlabelled / outlier) points %"] + [s["ignored_share"] for s in sets.values()],
        ["remission median (10-90 %)"] + [_fmt_q(s["remission_all"], 2) for s in sets.values()],
        ["zero-remission returns %"] + [s.get("zero_remission") for s in sets.values()],
    ]
    for r in (0, 25, 30, 43, 60, 63):
        rows.append([f"row {r} empty %"] + [100 * s["row_empty"][r] if len(s["row_empty"]) > r else None for s in sets.values()])
    real_rows = np.array(d["real"]["row_empty"])
    rows.append(["mean abs. difference of the per-row empty % from real"] + [
        float(np.mean(np.abs(np.array(s["row_empty"]) - real_rows)) * 100) if len(s["row_empty"]) == len(real_rows) else None
        for s in sets.values()])
    real_el = np.array(d["real"]["elevations"], dtype=float)
    rows.append(["elevation of the top / bottom beam, deg"] + [
        f"{np.nanmax(s['elevations']):.2f} / {np.nanmin(s['elevations']):.2f}" if s["elevations"] else "-" for s in sets.values()])
    rows.append(["mean abs. difference of the 64 beam elevations from real, deg"] + [
        float(np.nanmean(np.abs(np.array(s["elevations"], dtype=float) - real_el))) if len(s["elevations"]) == len(real_el)
        else None for s in sets.values()])
    lines += ["#### Range image and sensor", "", md_table(["figure", *names], rows), ""]
    lines += ["Real per-beam elevations (deg, top to bottom, median of the real frames): "
              + ", ".join(f"{e:.2f}" for e in d["real"]["elevations"]) + ".", ""]
    cls_rows = []
    for c in d["class_names"]:
        cls_rows.append([c] + [s["classes"][c]["share"] for s in sets.values()])
    lines += ["#### Class frequencies (% of the points per scan)", "", md_table(["class", *names], cls_rows), ""]
    zr = [[c] + [s["classes"][c].get("zero_remission") for s in sets.values()] for c in d["class_names"]
          if any(s["classes"][c]["share"] > 0 for s in sets.values())]
    lines += ["#### Zero-remission returns (% of the class's points)", "", md_table(["class", *names], zr), ""]
    for key, title, dg in (("range", "Range per class, m: median (10-90 %)", 1), ("remission", "Remission per class: median (10-90 %)", 2),
                           ("z", "Height z per class (sensor frame), m: median (10-90 %)", 2),
                           ("distance", "Horizontal distance per class, m: median (10-90 %)", 1)):
        classes = MAIN_CLASSES if key in ("z", "distance") else d["class_names"]
        rr = [[c] + [_fmt_q(s["classes"][c][key], dg) for s in sets.values()] for c in classes
              if any(s["classes"][c][key] for s in sets.values())]
        lines += [f"#### {title}", "", md_table(["class", *names], rr, "l" + "r" * len(names)), ""]
    lines += notes_md(d)
    if plot_link:
        lines += [f"![realism]({plot_link})", ""]
    return "\n".join(lines)


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from balvit.io import save_figure

    sets = {"real": d["real"], **d["generated"]}
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for name, s in sets.items():
        style = "k-" if name == "real" else "-"
        axes[0, 0].plot(100 * np.array(s["row_empty"]), style, label=name, lw=1.2)
        axes[0, 1].plot(s["elevations"], "kx" if name == "real" else "o-", ms=5 if name == "real" else 3, label=name,
                        zorder=3 if name == "real" else 2)
    axes[0, 0].set(xlabel="range-image row (64 x 2048, +3..-25 deg)", ylabel="empty pixels %", title="empty pixels per row")
    axes[0, 1].set(xlabel="beam (top to bottom)", ylabel="elevation deg", title="per-beam elevation")
    names = d["class_names"]
    x = np.arange(len(names))
    wbar = 0.8 / len(sets)
    for i, (name, s) in enumerate(sets.items()):
        axes[1, 0].bar(x + i * wbar, [s["classes"][c]["share"] for c in names], wbar, label=name)
        med = [s["classes"][c]["remission"][1] if s["classes"][c]["remission"] else np.nan for c in names]
        axes[1, 1].bar(x + i * wbar, med, wbar, label=name)
    for ax, t, yl in ((axes[1, 0], "class frequencies", "% of points"), (axes[1, 1], "median remission per class", "remission")):
        ax.set_xticks(x + 0.4 - wbar / 2)
        ax.set_xticklabels(names, rotation=70, fontsize=7)
        ax.set(title=t, ylabel=yl)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", default=str(REAL), help="a real SemanticKITTI sequence folder (velodyne/, labels/)")
    p.add_argument("--frames", type=int, default=3, help="real and generated scans to compare")
    p.add_argument("--label", default="generated", help="name of the generated column (e.g. before / after)")
    p.add_argument("--out", default=str(OUT / "realism.json"))
    p.add_argument("--quick", action="store_true", help="one small generated scan (smoke test)")
    args = p.parse_args(argv)
    from balvit.data.labels import labels_for

    names = labels_for("semantickitti").class_names
    out = Path(args.out)
    t0 = time.time()
    frames = 1 if args.quick else args.frames
    real_dir = Path(args.real)
    if (real_dir / "velodyne").is_dir():
        real = scan_set_stats(read_scans(real_dir, frames), names)
        source = str(real_dir)
    elif args.quick:  # no real data: compare the generator with itself (smoke test only)
        real, source = None, "none (quick run without real data)"
    else:
        raise SystemExit(f"{real_dir}: no real SemanticKITTI scans (velodyne/, labels/); pass --real")
    gen, timing = generated_scans(out.parent, frames, args.quick)
    g = scan_set_stats(gen, names)
    g["timing"] = timing
    d = json.loads(out.read_text()) if out.is_file() else {}
    d.update({"machine": machine(), "real_source": source, "class_names": list(names), "real": real or g})
    d.setdefault("generated", {})[args.label] = g
    d["seconds"] = time.time() - t0
    write_json(out, d)
    plot(d, out.with_suffix(".png"))
    print(markdown(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
