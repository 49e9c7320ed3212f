"""`generate`: simulate a synthetic SemanticKITTI or nuScenes-lidarseg dataset and write it to disk.

Each sequence (KITTI) / scene (nuScenes) gets its own procedural world (world.py) seeded from
(seed, format, sequence); each frame its own noise generator seeded from (seed, format, sequence, frame),
so the output is byte-identical for the same arguments, whatever the number of worker processes.
The parent plans everything that does not need ray casting (poses, timestamps, tokens, tables);
the frames are simulated and written in parallel (fork) and the tables written last.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...errors import ConfigError
from ...io import ensure_writable
from ..camera import pose_matrix, rot_to_quat
from ..labels import load_yaml
from . import writers as wr
from .camera import PinholeCamera, render
from .classes import CLASSES, NUM_CLASSES, cid, kitti_tables, nuscenes_table
from .geometry import BOX, PrimBuffer, Prims
from .lidar import hdl32, hdl64, scan
from .world import World, build_world

FORMATS = ("semantickitti", "nuscenes")
NUS_SAMPLE_DT = 0.5  # keyframes at 2 Hz
THING = np.array([c.thing for c in CLASSES])


# ================================================================================================ public API
def generate(fmt: str, out: str | Path, *, sequences: list[str] | None = None, frames: int = 50, seed: int = 0,
             beams: int | None = None, azimuth_steps: int | None = None, image_scale: float = 1.0,
             cameras: bool = True, masks: bool = True, version: str = "v1.0-trainval", workers: int = 1,
             progress: bool = True) -> dict:
    """Write a synthetic dataset in the official layout of `fmt` under `out`; returns a summary dict."""
    if fmt not in FORMATS:
        raise ConfigError(f"generate: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if int(frames) < 1:
        raise ConfigError(f"generate: frames must be >= 1, got {frames}")
    if not image_scale > 0:
        raise ConfigError(f"generate: image_scale must be > 0, got {image_scale}")
    if int(workers) < 1:
        raise ConfigError(f"generate: workers must be >= 1, got {workers}")
    for name, v in (("beams", beams), ("azimuth_steps", azimuth_steps)):
        if v is not None and int(v) < 2:
            raise ConfigError(f"generate: {name} must be >= 2, got {v}")
    if fmt == "nuscenes" and not re.fullmatch(r"v1\.0-[a-z]+", str(version)):
        raise ConfigError(f"generate: nuScenes version must look like 'v1.0-trainval' or 'v1.0-mini', got {version!r}")
    out = ensure_writable(out, "--out")  # before the first frame is simulated
    t0 = time.perf_counter()
    ctx = Context(fmt=fmt, out=out, seed=int(seed), frames=int(frames), beams=beams, azimuth_steps=azimuth_steps,
                  scale=float(image_scale), cameras=bool(cameras), masks=bool(masks) and bool(cameras),
                  version=version)
    if fmt == "semantickitti":
        names = _kitti_sequences(sequences)
        _plan_kitti(ctx, names, progress)
    else:
        names = _nuscenes_scenes(sequences, version)
        _plan_nuscenes(ctx, names, progress)
    results = _run(ctx, int(workers), progress)
    ctx.finalize()
    seconds = time.perf_counter() - t0
    counts = np.sum([r["counts"] for r in results], axis=0)
    n = len(results)
    return {
        "format": fmt,
        "out": str(out),
        "sequences": names,
        "frames": n,
        "points_per_scan": float(np.mean([r["points"] for r in results])),
        "seconds": seconds,
        "seconds_per_scan": seconds / n,
        "lidar_seconds_per_scan": float(np.mean([r["lidar_s"] for r in results])),
        "camera_seconds_per_scan": float(np.mean([r["camera_s"] for r in results])),
        "world_seconds": ctx.world_seconds,
        "class_points": {CLASSES[i].name: int(c) for i, c in enumerate(counts) if c},
    }


# ================================================================================================ planning
@dataclass
class Context:
    fmt: str
    out: Path
    seed: int
    frames: int
    beams: int | None
    azimuth_steps: int | None
    scale: float
    cameras: bool
    masks: bool
    version: str
    worlds: list[World] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    kitti_meta: list[tuple[Path, list, list]] = field(default_factory=list)
    world_seconds: float = 0.0

    def finalize(self) -> None:
        if self.fmt == "semantickitti":
            for seq_dir, poses, times in self.kitti_meta:
                wr.write_kitti_calib(seq_dir, self.scale)
                wr.write_kitti_poses(seq_dir, poses)
                wr.write_kitti_times(seq_dir, times)
        else:
            wr.write_nuscenes_tables(self.out, self.version, self.tables)
            (self.out / "lidarseg" / self.version).mkdir(parents=True, exist_ok=True)  # the devkit lists it
            for m in self.tables["map"]:
                wr.write_map(self.out, m["filename"])


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _kitti_sequences(sequences: list[str] | None) -> list[str]:
    names = ["00", "08"] if sequences is None else [str(s) for s in sequences]
    if not names:
        raise ConfigError("generate: no sequences given")
    for s in names:
        if not re.fullmatch(r"\d{2}", s) or int(s) > 21:
            raise ConfigError(f"generate: SemanticKITTI sequence ids are two digits 00..21, got {s!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"generate: duplicate sequence ids in {names}")
    return names


def _nuscenes_scenes(sequences: list[str] | None, version: str) -> list[str]:
    splits = load_yaml("nuscenes_splits")
    if sequences is None:
        if "mini" in version:
            return [splits["mini_train"][0], splits["mini_train"][1], splits["mini_val"][0]]
        return [splits["train"][0], splits["train"][1], splits["val"][0]]
    known = set().union(*(set(v) for v in splits.values()))
    names = [str(s) for s in sequences]
    if not names:
        raise ConfigError("generate: no scenes given")
    for s in names:
        if s not in known:
            raise ConfigError(f"generate: {s!r} is not an official nuScenes scene name (nuscenes_splits.yaml)")
    if len(set(names)) != len(names):
        raise ConfigError(f"generate: duplicate scene names in {names}")
    return names


def _build_world(ctx: Context, fmt_code: int, seq_code: int, duration: float) -> World:
    t = time.perf_counter()
    w = build_world(_rng(ctx.seed, fmt_code, seq_code, 0), ctx.fmt, duration)
    ctx.world_seconds += time.perf_counter() - t
    return w


def _plan_kitti(ctx: Context, names: list[str], progress: bool) -> None:
    Tr = wr.kitti_tr()
    T_velo_cam0 = np.linalg.inv(Tr)
    T_ego_velo = np.eye(4)
    T_ego_velo[2, 3] = wr.KITTI_LIDAR_HEIGHT
    for k, sid in enumerate(tqdm(names, desc="worlds", disable=not progress)):
        times = [i * wr.KITTI_DT for i in range(ctx.frames)]
        world = _build_world(ctx, 0, int(sid), times[-1] + 0.5)
        ctx.worlds.append(world)
        seq_dir = ctx.out / "sequences" / sid
        labelled = sid not in wr.KITTI_TEST_SEQUENCES
        cams0 = [world.ego_matrix(t, tilt=True) @ T_ego_velo @ T_velo_cam0 for t in times]
        inv0 = np.linalg.inv(cams0[0])
        ctx.kitti_meta.append((seq_dir, [inv0 @ c for c in cams0], times))
        for i, t in enumerate(times):
            ctx.jobs.append({"world": k, "seq": sid, "index": i, "time": t, "dir": seq_dir, "labelled": labelled,
                             "T_w_velo": world.ego_matrix(t, tilt=True) @ T_ego_velo})


def _plan_nuscenes(ctx: Context, names: list[str], progress: bool) -> None:
    cats = load_yaml("nuscenes")["categories"]
    splits = load_yaml("nuscenes_splits")
    test = set(splits.get("test", []))
    S = ctx.seed
    channels = ["LIDAR_TOP"] + list(wr.NUS_CAMERAS)
    sensors = [{"token": wr.token("sensor", ch), "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"}
               for ch in channels]
    T = {k: [] for k in ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "log", "lidarseg")}
    W, H = max(int(round(wr.NUS_SIZE[0] * ctx.scale)), 8), max(int(round(wr.NUS_SIZE[1] * ctx.scale)), 8)
    locations = ["singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage", "boston-seaport"]
    for k, name in enumerate(tqdm(names, desc="worlds", disable=not progress)):
        code = int(name.split("-")[-1]) if name.split("-")[-1].isdigit() else zlib.crc32(name.encode())
        rng = _rng(S, 1, code, 1)
        duration = (ctx.frames - 1) * NUS_SAMPLE_DT + 0.1
        world = _build_world(ctx, 1, code, duration)
        ctx.worlds.append(world)
        labelled = name not in test
        # log, global frame, calibration
        loc = locations[int(rng.integers(len(locations)))]
        boston = loc.startswith("boston")
        day = (int(rng.integers(6, 10)), int(rng.integers(1, 29)), int(rng.integers(8, 18)), int(rng.integers(0, 60)),
               int(rng.integers(0, 60)))
        logfile = f"{'n008' if boston else 'n015'}-2018-{day[0]:02d}-{day[1]:02d}-{day[2]:02d}-{day[3]:02d}-{day[4]:02d}" \
                  f"{'-0400' if boston else '+0800'}"
        log_tok = wr.token(S, "log", name)
        T["log"].append({"token": log_tok, "logfile": logfile, "vehicle": logfile[:4],
                         "date_captured": f"2018-{day[0]:02d}-{day[1]:02d}", "location": loc})
        theta = rng.uniform(0, 2 * np.pi)
        G = np.eye(4)
        G[:3, :3] = _rot(0.0, 0.0, theta)
        G[:2, 3] = rng.uniform(300, 2000, 2)
        cs = {}
        for ch in channels:
            if ch == "LIDAR_TOP":
                R = _rot(*np.deg2rad(rng.normal(0, 0.2, 2)), np.deg2rad(-90 + rng.normal(0, 0.2)))
                t = wr.NUS_LIDAR_T + rng.normal(0, 0.005, 3)
                K = None
            else:
                tr, yaw, f, cx, cy, _ = wr.NUS_CAMERAS[ch]
                R = _rot(0.0, 0.0, np.deg2rad(yaw + rng.normal(0, 0.3))) @ wr.NUS_CAM_BASE @ _rot(
                    *np.deg2rad(rng.normal(0, 0.3, 3)))
                t = np.array(tr) + rng.normal(0, 0.01, 3)
                K = np.array([[f * ctx.scale, 0, cx * ctx.scale], [0, f * ctx.scale, cy * ctx.scale], [0, 0, 1.0]])
            q = rot_to_quat(R).tolist()
            tok = wr.token(S, "cs", name, ch)
            T["calibrated_sensor"].append({"token": tok, "sensor_token": wr.token("sensor", ch),
                                           "translation": [float(v) for v in t], "rotation": q,
                                           "camera_intrinsic": [] if K is None else K.tolist()})
            cs[ch] = (tok, pose_matrix(t, q), K)
        t0_us = 1_530_000_000_000_000 + int(rng.integers(0, 10**13))
        scene_tok = wr.token(S, "scene", name)
        sample_toks = [wr.token(S, "sample", name, i) for i in range(ctx.frames)]
        sd_prev = {ch: "" for ch in channels}
        sd_rows = {ch: [] for ch in channels}
        for i in range(ctx.frames):
            ts_l = t0_us + int(round(i * NUS_SAMPLE_DT * 1e6)) + int(rng.integers(-2000, 2000)) if i else t0_us
            T["sample"].append({"token": sample_toks[i], "timestamp": ts_l,
                                "prev": sample_toks[i - 1] if i else "",
                                "next": sample_toks[i + 1] if i + 1 < ctx.frames else "", "scene_token": scene_tok})
            job = {"world": k, "scene": name, "index": i, "labelled": labelled, "cams": []}
            for ch in channels:
                ts = ts_l if ch == "LIDAR_TOP" else ts_l + 1000 * wr.NUS_CAMERAS[ch][5] + int(rng.integers(-500, 500))
                t_world = (ts - t0_us) / 1e6
                ego_w = world.ego_matrix(t_world, tilt=False)
                ego_g = G @ ego_w
                ep_tok = wr.token(S, "ego_pose", name, ch, i)
                q = rot_to_quat(ego_g[:3, :3]).tolist()
                T["ego_pose"].append({"token": ep_tok, "timestamp": ts, "rotation": q,
                                      "translation": [float(v) for v in ego_g[:3, 3]]})
                sd_tok = wr.token(S, "sample_data", name, ch, i)
                cam = ch != "LIDAR_TOP"
                fname = f"samples/{ch}/{logfile}__{ch}__{ts}.{'jpg' if cam else 'pcd.bin'}"
                # render from the pose exactly as the tables state it (quaternion round trip), in world coordinates
                ego_w_tab = np.linalg.inv(G) @ pose_matrix(ego_g[:3, 3], q)
                row = {"token": sd_tok, "sample_token": sample_toks[i], "ego_pose_token": ep_tok,
                       "calibrated_sensor_token": cs[ch][0], "timestamp": ts, "fileformat": "jpg" if cam else "pcd",
                       "is_key_frame": True, "height": H if cam else 0, "width": W if cam else 0, "filename": fname,
                       "prev": sd_prev[ch], "next": ""}
                if sd_rows[ch]:
                    sd_rows[ch][-1]["next"] = sd_tok
                sd_prev[ch] = sd_tok
                sd_rows[ch].append(row)
                if cam:
                    job["cams"].append({"channel": ch, "time": t_world, "T_world_cam": ego_w_tab @ cs[ch][1],
                                        "K": cs[ch][2], "width": W, "height": H, "file": fname,
                                        "mask": wr.nuscenes_mask_name(fname)})
                else:
                    job.update(time=t_world, T_world_ego=ego_w_tab, T_world_lidar=ego_w_tab @ cs[ch][1], file=fname,
                               seg=f"lidarseg/{ctx.version}/{sd_tok}_lidarseg.bin")
                    if labelled:
                        T["lidarseg"].append({"token": sd_tok, "sample_data_token": sd_tok, "filename": job["seg"]})
            ctx.jobs.append(job)
        for ch in channels:
            T["sample_data"].extend(sd_rows[ch])
        T["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": ctx.frames,
                           "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1], "name": name,
                           "description": f"Synthetic street scene (balvit, seed {S}), {loc}."})
    map_tok = wr.token(S, "map")
    ctx.tables = {
        "category": wr.category_table(cats),
        "attribute": [],
        "visibility": wr.VISIBILITY,
        "instance": [],
        "sensor": sensors,
        "calibrated_sensor": T["calibrated_sensor"],
        "ego_pose": T["ego_pose"],
        "log": T["log"],
        "scene": T["scene"],
        "sample": T["sample"],
        "sample_data": T["sample_data"],
        "sample_annotation": [],
        "map": [{"category": "semantic_prior", "token": map_tok, "filename": f"maps/{map_tok}.png",
                 "log_tokens": [r["token"] for r in T["log"]]}],
        "lidarseg": T["lidarseg"],
    }


def _rot(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    Ry = np.array([[cp, 0, sp], [0, 1.0, 0], [-sp, 0, cp]])
    Rx = np.array([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return Rz @ Ry @ Rx


# ================================================================================================ frames
_CTX: Context | None = None


def _run(ctx: Context, workers: int, progress: bool) -> list[dict]:
    global _CTX
    _CTX = ctx
    try:
        bar = tqdm(total=len(ctx.jobs), desc=f"generate {ctx.fmt}", unit="scan", disable=not progress)
        results = []
        if workers == 1 or len(ctx.jobs) == 1:
            for i in range(len(ctx.jobs)):
                results.append(_do_job(i))
                bar.update()
        else:
            with mp.get_context("fork").Pool(min(workers, len(ctx.jobs))) as pool:
                for r in pool.imap(_do_job, range(len(ctx.jobs))):
                    results.append(r)
                    bar.update()
        bar.close()
        return results
    finally:
        _CTX = None


def _do_job(i: int) -> dict:
    ctx = _CTX
    job = ctx.jobs[i]
    if ctx.fmt == "semantickitti":
        return _kitti_frame(ctx, job)
    return _nuscenes_frame(ctx, job)


def _kitti_frame(ctx: Context, job: dict) -> dict:
    world = ctx.worlds[job["world"]]
    spec = hdl64(ctx.beams, ctx.azimuth_steps)
    prims = world.prims_at(job["time"])
    rng = _rng(ctx.seed, 0, int(job["seq"]), job["index"], 2)
    t0 = time.perf_counter()
    sc = scan(spec, prims, world.ground, job["T_w_velo"], rng)
    lidar_s = time.perf_counter() - t0
    static, moving = kitti_tables()
    raw = np.where(sc["moving"], moving[sc["cls"]], static[sc["cls"]])
    inst = np.where(THING[sc["cls"]], sc["inst"], 0)
    labels = (raw.astype(np.uint32) | (inst.astype(np.uint32) << 16)) if job["labelled"] else None
    points = np.concatenate([sc["xyz"], sc["remission"][:, None]], axis=1)
    image = mask = None
    t1 = time.perf_counter()
    if ctx.cameras:
        W, H = wr.kitti_image_size(ctx.scale)
        T_cam0_cam2 = np.eye(4)
        T_cam0_cam2[:3, 3] = -wr.KITTI_CAM_T[2]
        T_world_cam = job["T_w_velo"] @ np.linalg.inv(wr.kitti_tr()) @ T_cam0_cam2
        cam = PinholeCamera(wr.kitti_K(ctx.scale), W, H, T_world_cam)
        image, cls, mov = render(cam, prims, world.ground, world.sun, world.sky)
        if ctx.masks and job["labelled"]:
            mask = np.where(cls >= 0, np.where(mov, moving[np.maximum(cls, 0)], static[np.maximum(cls, 0)]), 0)
    camera_s = time.perf_counter() - t1
    wr.write_kitti_frame(job["dir"], job["index"], points, labels, image, mask)
    return {"points": len(points), "counts": np.bincount(sc["cls"], minlength=NUM_CLASSES), "lidar_s": lidar_s,
            "camera_s": camera_s}


# body and cabin of the ego car (Renault Zoe) in the nuScenes ego frame: centre, half extents
EGO_BOXES = (((1.45, 0.0, 0.5), (2.45, 0.9, 0.3)), ((0.75, 0.0, 1.1), (0.85, 0.5, 0.25)))


def _ego_prims(T_world_ego: np.ndarray) -> Prims:
    """The ego car as seen by its own roof LiDAR (class vehicle.ego)."""
    buf = PrimBuffer()
    yaw = float(np.arctan2(T_world_ego[1, 0], T_world_ego[0, 0]))
    for centre, half in EGO_BOXES:
        c = T_world_ego @ np.array([*centre, 1.0])
        buf.add(BOX, c[:3], half, yaw, cid("ego"), 0, 0.2, (0.3, 0.3, 0.35), 0)
    return buf.freeze()


def _nuscenes_frame(ctx: Context, job: dict) -> dict:
    world = ctx.worlds[job["world"]]
    spec = hdl32(ctx.beams, ctx.azimuth_steps)
    code = int(job["scene"].split("-")[-1]) if job["scene"].split("-")[-1].isdigit() else zlib.crc32(
        job["scene"].encode())
    rng = _rng(ctx.seed, 1, code, job["index"], 2)
    prims = Prims.concat([world.prims_at(job["time"]), _ego_prims(job["T_world_ego"])])
    T_scan = job["T_world_lidar"].copy()
    T_scan[:3, :3] = T_scan[:3, :3] @ wr.NUS_LIDAR_FROM_SCAN
    t0 = time.perf_counter()
    sc = scan(spec, prims, world.ground, T_scan, rng, frame_to_sensor=wr.NUS_LIDAR_FROM_SCAN)
    lidar_s = time.perf_counter() - t0
    intensity = np.round(sc["remission"] * 255.0)
    points = np.concatenate([sc["xyz"], intensity[:, None], sc["ring"][:, None]], axis=1).astype(np.float32)
    wr.write_nuscenes_lidar(ctx.out, job["file"], points)
    table = nuscenes_table()
    if job["labelled"]:
        wr.write_nuscenes_lidarseg(ctx.out, job["seg"], table[sc["cls"]])
    t1 = time.perf_counter()
    if ctx.cameras:
        for cam in job["cams"]:
            pc = PinholeCamera(cam["K"], cam["width"], cam["height"], cam["T_world_cam"])
            image, cls, _ = render(pc, world.prims_at(cam["time"]), world.ground, world.sun, world.sky)
            wr.write_nuscenes_image(ctx.out, cam["file"], image)
            if ctx.masks and job["labelled"]:
                mask = np.where(cls >= 0, table[np.maximum(cls, 0)].astype(np.uint16), 0)
                wr.write_nuscenes_mask(ctx.out, cam["mask"], mask)
    camera_s = time.perf_counter() - t1
    return {"points": len(points), "counts": np.bincount(sc["cls"], minlength=NUM_CLASSES), "lidar_s": lidar_s,
            "camera_s": camera_s}
