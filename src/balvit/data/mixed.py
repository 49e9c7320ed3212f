"""Several sample datasets behind one index, for training on a mixture of datasets in one loader
(ScaLR pretrains on nuScenes + SemanticKITTI + PandaSet at once, Puy et al., CVPR 2024).

Keys are those of `StreamSampler`: a frame index, or (frame index, epoch); position k of the mixture
is frame k - start_j of dataset j. A batch may hold scans of different datasets: `collate` pads
their range images to a common size, and every sample keeps its own frame id and reader index.
"""

from __future__ import annotations

import bisect

from torch.utils.data import Dataset

from ..errors import DataError


class MixedDataset(Dataset):
    def __init__(self, datasets: list[Dataset]):
        if not datasets:
            raise DataError("no dataset to mix")
        self.datasets = list(datasets)
        self.starts = [0]
        for d in self.datasets:
            self.starts.append(self.starts[-1] + len(d))

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, k: int) -> tuple[int, int]:
        """Mixture position -> (dataset number, frame index in that dataset)."""
        if not 0 <= k < len(self):
            raise IndexError(f"index {k} outside the {len(self)} frames of the mixture")
        j = bisect.bisect_right(self.starts, k) - 1
        return j, k - self.starts[j]

    def __getitem__(self, key):
        k, epoch = key if isinstance(key, tuple) else (key, None)
        j, i = self.locate(int(k))
        sample = self.datasets[j][(i, epoch) if epoch is not None else i]
        sample["dataset"] = j
        return sample
