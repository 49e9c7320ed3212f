"""Command line: balvit train | eval | predict | check | info | stats | generate | splits | pseudolabels | convert | export.

Every command that runs a model works the same under `torchrun --nproc_per_node=N` (DDP) and as a
single process. Errors in the input (a wrong config key, a missing file, a corrupt scan, a
checkpoint of another model) end with one line naming the problem and exit status 2.

Under torchrun (`report_error`) each failing process also writes that line into torchrun's error file
(TORCHELASTIC_ERROR_FILE), so that the summary torchrun prints last shows it as the failure's
"traceback"; rank 0 prints it, the other ranks leave it to that summary (an error every rank raises
is printed once). torchrun itself then exits 1 (it has no way to pass a child's status on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .errors import BalvitError, ConfigError
from .run_config import Config, load_config

log = logging.getLogger("balvit")


def _config(args) -> Config:
    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    return load_config(args.config, overrides)


def _not_negative(value: int | None, flag: str) -> None:
    if value is not None and value < 0:
        raise ConfigError(f"{flag} must be >= 0, got {value}")


def cmd_train(args) -> int:
    from .engine import dist as D
    from .engine.log import setup_logging
    from .engine.trainer import Trainer

    info = D.init_distributed()
    setup_logging(info.rank)
    try:
        cfg = _config(args)
        trainer = Trainer(cfg, args.save_path, info, progress=not args.no_progress, restart=args.restart)
        metrics = trainer.fit()
        if info.is_main and metrics:
            if "miou" in metrics:
                print(f"mIoU: {metrics['miou']:.2f}", flush=True)
            else:  # a task with its own validation score (e.g. distillation: minus the loss)
                print(f"score: {metrics['score']:.4f}", flush=True)
    finally:
        D.cleanup()
    return 0


def cmd_eval(args) -> int:
    from .engine import dist as D
    from .engine.log import setup_logging
    from .engine.trainer import run_eval

    _not_negative(args.pictures, "--pictures")
    info = D.init_distributed()
    setup_logging(info.rank)
    try:
        if args.viewer and not args.save_path:
            raise ConfigError("--viewer needs --save_path (the pages go to SAVE_PATH/viewer/)")
        cfg = _config(args)
        run_eval(cfg, args.checkpoint, info, save_path=args.save_path, split=args.split,
                 pictures=args.pictures, progress=not args.no_progress, viewer=args.viewer)
    finally:
        D.cleanup()
    return 0


FILE_OPTIONS = ("format", "ply", "intensity", "intensity_max", "workers")  # predict --input only


def cmd_predict(args) -> int:
    from .engine import dist as D
    from .engine.log import setup_logging
    from .engine.trainer import run_predict

    if args.input:
        return cmd_predict_files(args)
    if not args.config:
        raise ConfigError("balvit predict needs CONFIG --data_root DIR (a dataset's split) or --input PATH ... "
                          "(point files)")
    given = [f"--{k.replace('_', '-')}" for k in FILE_OPTIONS if getattr(args, k) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --input (point files)")
    _not_negative(args.pictures, "--pictures")
    info = D.init_distributed()
    setup_logging(info.rank)
    try:
        cfg = _config(args)
        run_predict(cfg, args.checkpoint, info, args.out, split=args.split, pictures=args.pictures,
                    progress=not args.no_progress, viewer=args.viewer)
    finally:
        D.cleanup()
    return 0


def cmd_predict_files(args) -> int:
    """`balvit predict --checkpoint CK --input PATH ... --out DIR`: point files, the checkpoint's config.
    The files are read and checked before the model is built (balvit/api.py read_point_files)."""
    from .engine import dist as D
    from .engine.log import setup_logging
    from .engine.trainer import set_threads

    if args.config or args.data_root or args.overrides or args.split != "valid" or args.pictures is not None:
        raise ConfigError("predict --input takes the model's config from the checkpoint: no CONFIG, --data_root, "
                          "--split, --pictures or key=value overrides")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    from .api import load, output_format, predict_point_files, read_point_files
    from .engine.checkpoint import load_checkpoint
    from .engine.pretrained import config_of
    from .io import ensure_writable

    info = D.init_distributed()
    setup_logging(info.rank)
    try:
        cfg = config_of(load_checkpoint(args.checkpoint), args.checkpoint)
        fmt = output_format(args.format, cfg.data.dataset)
        reader = read_point_files(args.input, cfg, intensity=args.intensity or "auto", intensity_max=args.intensity_max,
                                  echo=(lambda line: print(line, flush=True)) if info.is_main else None)
        if info.is_main:
            ensure_writable(args.out, "--out")
        set_threads(info)
        model = load(args.checkpoint, device=info.device)
        workers = model.config.data.num_workers if args.workers is None else args.workers
        summary = predict_point_files(model, reader, args.out, fmt=fmt, ply=args.ply, viewer=args.viewer, info=info,
                                      workers=workers, progress=not args.no_progress)
        if info.is_main:
            print(f"predicted {summary['files']} files with {model.name} ({args.checkpoint}) -> {args.out} "
                  f"({', '.join(summary['formats'])}{', viewer pages' if summary['viewer_pages'] else ''})", flush=True)
    finally:
        D.cleanup()
    return 0


def cmd_export(args) -> int:
    """`balvit export --checkpoint CK --format onnx --out model.onnx` (balvit/export.py)."""
    import warnings

    import torch

    from .api import load
    from .engine.checkpoint import load_checkpoint
    from .engine.log import setup_logging
    from .engine.pretrained import config_of
    from .export import export_onnx, graph_inputs

    setup_logging(0)
    state = load_checkpoint(Path(args.checkpoint))  # refuse before the model (and its backbone) is built
    graph_inputs(state.get("model_name"), config_of(state, Path(args.checkpoint)))
    del state
    segmenter = load(args.checkpoint, device="cpu")
    with warnings.catch_warnings():  # the tracer's notes on Python values it keeps constant (the image size)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        report = export_onnx(segmenter, args.out, opset=args.opset, check=not args.no_check)
    print(f"wrote {report['out']}: {report['model']} graph, inputs {', '.join(report['inputs'])} -> logits (N, "
          f"{report['classes']}); {report['exporter']}, opset {report['opset']}", flush=True)
    if "max_abs_diff" in report:
        print(f"onnxruntime vs PyTorch on a generated scan of {report['check_points']} points: max |difference| "
              f"{report['max_abs_diff']:.2e}", flush=True)
    return 0


def cmd_check(args) -> int:
    from .data.preflight import format_problems, run_preflight

    cfg = _config(args)
    splits = [s.strip() for s in args.splits.split(",")] if args.splits else None
    report = run_preflight(cfg, splits)
    if report.problems:
        print(format_problems(report.problems))
    print(f"balvit check: {report.summary()}")
    return 2 if report.errors else 0


def cmd_info(args) -> int:
    from .data.labels import labels_for
    from .models import build_model

    cfg = _config(args)
    model = build_model(cfg, labels_for(cfg.data.dataset).num_classes)
    print(f"model: {cfg.model.name}")
    for name, ident in model.frozen_identities().items():
        print(f"{name}: {ident.get('name')} weights={ident.get('weights')} sha256={str(ident.get('sha256'))[:16]}")
    print(model.param_report_text())
    return 0


def cmd_generate(args) -> int:
    from .data.synthetic import generate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sequences = [s.strip() for s in args.sequences.split(",")] if args.sequences else None
    summary = generate(args.format, args.out, sequences=sequences, frames=args.frames, seed=args.seed,
                       beams=args.beams, azimuth_steps=args.azimuth_steps, image_scale=args.image_scale,
                       cameras=not args.no_cameras, masks=not args.no_masks, version=args.version,
                       workers=args.workers, progress=not args.no_progress)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_splits(args) -> int:
    from .data.splits import run_splits

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        percents = tuple(float(p) for p in args.percents.split(","))
    except ValueError:
        raise ConfigError(f"--percents takes comma-separated numbers (e.g. 0.1,1,10), got {args.percents!r}") from None
    sequences = [x.strip() for x in args.sequences.split(",")] if args.sequences else None
    paths = run_splits(args.dataset, args.out, percents=percents, method=args.method, seed=args.seed,
                       data_root=args.data_root, version=args.version, sequences=sequences)
    for p in paths:
        print(p)
    return 0


def cmd_stats(args) -> int:
    from .data.dataset import build_reader, range_statistics

    if args.frames <= 0:
        raise ConfigError(f"--frames must be a positive number of frames to read, got {args.frames}")
    cfg = _config(args)
    reader = build_reader(cfg.data, args.split or cfg.data.train_split)
    stats = range_statistics(reader, cfg.data, max_frames=args.frames, progress=not args.no_progress)
    print(f"# range-image statistics of {stats['frames']} {reader.name} frames ({stats['pixels']} pixels)")
    print("data:\n  range:")
    print(f"    mean: {stats['mean']}  # range, x, y, z, intensity")
    print(f"    std: {stats['std']}")
    return 0


def cmd_pseudolabels(args) -> int:
    from .data.pseudo_labels import write_pseudolabels

    _not_negative(args.frames, "--frames")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = _config(args)
    result = write_pseudolabels(cfg, args.split, args.out, max_frames=args.frames, progress=not args.no_progress)
    print(f"{result['images']} label images under {args.out}; SAM-PLG prompts {result['prompts']}, "
          f"masks accepted {result['accepted']} ({result['predictor']} predictor)")
    for name, sc in result.get("scores", {}).items():
        print(f"{name:<11} pixel mIoU {sc['miou']:6.2f}  coverage {sc['coverage']:6.2f} %  precision {sc['precision']:6.2f} %")
    return 0


def cmd_convert(args) -> int:
    """An official WaffleIron / ScaLR / RangeViT checkpoint -> a balvit checkpoint (balvit/convert.py)."""
    from .convert import convert

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = convert(args.source, args.checkpoint, _config(args), args.out)
    print(f"wrote {summary['out']}: {summary['official_tensors']} official tensors -> {summary['tensors']} of ours")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="balvit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, checkpoint: bool, optional_config: bool = False):
        sp.add_argument("config", nargs="?" if optional_config else None, help="YAML config file (see config/)")
        sp.add_argument("--data_root", "--data-root", dest="data_root", help="dataset root (overrides data.root)")
        if checkpoint:
            sp.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt / last.pt)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")
        sp.set_defaults(overrides=[])  # key.path=value overrides (anywhere on the line)

    t = sub.add_parser("train", help="train a model (resumes from SAVE_PATH/last.pt)")
    common(t, checkpoint=False)
    t.add_argument("--save_path", "--save-path", dest="save_path", required=True, help="run directory")
    t.add_argument("--restart", action="store_true",
                   help="start over in SAVE_PATH: the earlier run's files move to SAVE_PATH/replaced-<time>/")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="per-class IoU and mIoU of a checkpoint on a labelled split")
    common(e, checkpoint=True)
    e.add_argument("--save_path", "--save-path", dest="save_path", help="write metrics.json/.md and pictures here")
    e.add_argument("--split", default=None, help="split to evaluate (default data.val_split)")
    e.add_argument("--pictures", type=int, default=None, help="frames to draw (default eval.pictures)")
    e.add_argument("--viewer", type=_count, default=0, metavar="N",
                   help="interactive 3D pages of N frames in SAVE_PATH/viewer/ (viewer.py)")
    e.set_defaults(fn=cmd_eval)

    pr = sub.add_parser("predict", help="write official-format prediction files (a dataset split, or point files)",
                        description="predict CONFIG --data_root DIR --checkpoint CK --out DIR (a dataset split), or "
                                    "predict --checkpoint CK --input PATH [PATH ...] --out DIR (point files, folders, "
                                    "globs; the checkpoint's config)")
    common(pr, checkpoint=True, optional_config=True)
    pr.add_argument("--out", required=True, help="output root (sequences/XX/predictions or lidarseg/<split>; "
                                                 "with --input: <out>/<name>.<ext>)")
    pr.add_argument("--split", default="valid", help="valid or test (default valid)")
    pr.add_argument("--pictures", type=int, default=None, help="frames to draw (default eval.pictures)")
    pr.add_argument("--viewer", type=_count, default=0, metavar="N",
                    help="interactive 3D pages of N scans in OUT/viewer/ (viewer.py)")
    pr.add_argument("--input", nargs="+", default=None, metavar="PATH",
                    help="point files (.bin .pcd.bin .pcd .ply .las .laz .npy .npz), folders or globs")
    pr.add_argument("--format", default=None, choices=["label", "lidarseg", "npy"],
                    help="with --input: output format (default: label for SemanticKITTI, lidarseg for nuScenes models)")
    pr.add_argument("--ply", action="store_true", help="with --input: also a coloured <name>.ply")
    pr.add_argument("--intensity", default=None, metavar="FIELD|zero",
                    help="with --input: the field taken as intensity (default: the first of intensity, remission, "
                         "reflectance, ...), or zero for files without one")
    pr.add_argument("--intensity-max", dest="intensity_max", type=float, default=None,
                    help="with --input: the stored value of full intensity, where the format does not fix it")
    pr.add_argument("--workers", type=int, default=None,
                    help="with --input: loader processes reading the files (default the checkpoint's data.num_workers)")
    pr.set_defaults(fn=cmd_predict)

    c = sub.add_parser("check", help="pre-flight check of the configured splits' files by size (exit 2 on errors)")
    common(c, checkpoint=False)
    c.add_argument("--splits", default=None, help="comma-separated splits (default data.train_split,data.val_split)")
    c.set_defaults(fn=cmd_check)

    i = sub.add_parser("info", help="print the model's trainable / frozen / total parameter counts")
    i.add_argument("config")
    i.set_defaults(fn=cmd_info, data_root=None, overrides=[])

    st = sub.add_parser("stats", help="range-image normalisation statistics (data.range.mean/std) of a dataset")
    common(st, checkpoint=False)
    st.add_argument("--frames", type=int, default=200, help="evenly spaced frames to read")
    st.add_argument("--split", default=None, help="split to read (default data.train_split)")
    st.set_defaults(fn=cmd_stats)

    g = sub.add_parser("generate", help="write a synthetic dataset in the official SemanticKITTI / nuScenes layout")
    g.add_argument("--format", required=True, choices=["semantickitti", "nuscenes"])
    g.add_argument("--out", required=True)
    g.add_argument("--sequences", default=None, help="KITTI sequences (e.g. 00,08) or nuScenes scene names")
    g.add_argument("--frames", type=int, default=50, help="frames per sequence / samples per scene")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--beams", type=int, default=None, help="override the number of beams")
    g.add_argument("--azimuth-steps", type=int, default=None, help="override the azimuth resolution")
    g.add_argument("--image-scale", type=float, default=1.0, help="camera image size factor")
    g.add_argument("--no-cameras", action="store_true")
    g.add_argument("--no-masks", action="store_true", help="skip the per-pixel class masks")
    g.add_argument("--version", default="v1.0-trainval", help="nuScenes tables folder")
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(fn=cmd_generate)

    s = sub.add_parser("splits", help="write label-efficient frame lists (+ class-presence statistics)")
    s.add_argument("--dataset", required=True, choices=["semantickitti", "nuscenes"])
    s.add_argument("--out", required=True, help="output folder (e.g. splits/semantickitti)")
    s.add_argument("--data_root", "--data-root", dest="data_root", default=None,
                   help="dataset root; without it SemanticKITTI lists come from the official frame counts")
    s.add_argument("--percents", default="0.1,1,10,100")
    s.add_argument("--method", default="uniform", choices=["uniform", "random", "scenes"],
                   help="uniform: sorted(frames)[::k]; random: seeded sample; scenes: every k-th nuScenes scene")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--version", default="v1.0-trainval")
    s.add_argument("--sequences", default=None, help="SemanticKITTI training sequences if not the official ones (e.g. 00)")
    s.set_defaults(fn=cmd_splits)

    pl = sub.add_parser("pseudolabels", help="dense camera pseudo-labels (SAM-PLG, ELiTe) from projected LiDAR labels")
    common(pl, checkpoint=False)
    pl.add_argument("--out", required=True, help="output folder: <out>/<frame>/<camera>.png + scores.json")
    pl.add_argument("--split", default="train", help="split to label (default train)")
    pl.add_argument("--frames", type=int, default=0, help="only the first N frames (0: all)")
    pl.set_defaults(fn=cmd_pseudolabels)

    cv = sub.add_parser("convert", help="an official WaffleIron / ScaLR / RangeViT checkpoint -> a balvit checkpoint")
    cv.add_argument("--from", dest="source", required=True, choices=["waffleiron", "scalr", "rangevit"])
    cv.add_argument("checkpoint", help="the authors' released checkpoint (.pth)")
    cv.add_argument("--config", required=True, help="YAML config of the same architecture (e.g. config/baselines/...)")
    cv.add_argument("--out", required=True, help="the balvit checkpoint to write")
    cv.set_defaults(fn=cmd_convert, data_root=None, overrides=[])

    ex = sub.add_parser("export", help="export a checkpoint's network to ONNX (range image + point index tensors -> logits)")
    ex.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt / last.pt)")
    ex.add_argument("--format", default="onnx", choices=["onnx"])
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18: ScatterElements max)")
    ex.add_argument("--no-check", action="store_true",
                    help="skip the onnxruntime vs PyTorch check on a generated scan")
    ex.set_defaults(fn=cmd_export)
    return p


def _count(text: str) -> int:
    """A non-negative count for argparse (e.g. --viewer N)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # key=value overrides may come after options (`train CFG --save_path X train.lr=1e-3`), which
    # argparse leaves unparsed: collect them, refuse anything else
    args, rest = parser.parse_known_args(argv)
    extra = [r for r in rest if "=" in r and not r.startswith("-")]
    unknown = [r for r in rest if r not in extra]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        return args.fn(args)
    except BalvitError as e:
        report_error(f"balvit {args.command}: error: {e}")
        return 2


def report_error(line: str) -> None:
    """Print an error line on stderr; under torchrun also write it into this process's error file
    (torchrun's summary shows it), and print it on rank 0 only."""
    rank = int(os.environ.get("RANK", "0") or 0)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:  # the format torch.distributed.elastic's ErrorHandler.record_exception writes
        record = {"message": {"message": line, "extraInfo": {"py_callstack": line,
                                                             "timestamp": str(int(time.time()))}}}
        try:
            with open(error_file, "w") as f:
                json.dump(record, f)
        except OSError:
            error_file = None
    if rank == 0 or not error_file:
        print(f"[rank {rank}] {line}" if rank else line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
