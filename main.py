"""Entry point with the interface of the original BALViT README:

    torchrun --nproc_per_node=$NUM_GPUS --master_addr=127.0.0.1 --master_port=30322 main.py \
        $CONFIG_FILE --data_root=$DATA_ROOT --save_path=$SAVE_PATH [--test_only --checkpoint $CHECKPOINT_PATH]

Without --test_only it trains (resuming from $SAVE_PATH/last.pt if present); with --test_only it
evaluates the checkpoint on the validation split and writes $SAVE_PATH/metrics.json. Extra
`key=value` arguments override config entries. Works with plain `python main.py ...` too.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from balvit.cli import main as balvit_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--data_root", required=True)
    p.add_argument("--save_path", required=True)
    p.add_argument("--test_only", action="store_true", help="evaluate --checkpoint instead of training")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args(argv)
    common = ["--data_root", args.data_root]
    if args.test_only:
        if not args.checkpoint:
            p.error("--test_only needs --checkpoint")
        return balvit_main(["eval", args.config, *common, "--checkpoint", args.checkpoint,
                            "--save_path", args.save_path, *args.overrides])
    return balvit_main(["train", args.config, *common, "--save_path", args.save_path, *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
