"""`python -m balvit ...` = the `balvit` command (also `torchrun --nproc_per_node=N -m balvit train ...`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
