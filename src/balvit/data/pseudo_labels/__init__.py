"""Camera pseudo-labels from labelled LiDAR points.

  - labeller.py: the one interface every task uses (`PseudoLabels`, config section `pseudo_labels`,
    the cache, `balvit pseudolabels`);
  - common.py: projection into a z-buffered sparse label image, densification, label PNGs;
  - boxes.py: MultiViT's instance masks from projected 3D box prompts (SAM or a stand-in);
  - samplg.py: ELiTe's SAM-PLG (point + mask prompts from the sparse labels).

SAM itself (building a transformers SamModel, running it on prompts) is models/sam.py; the scores of
label images against true per-pixel classes are balvit/metrics.py's camera-pixel scores.
"""

from .boxes import THING_CLASSES, HullPredictor, InstancePainter, SamBoxPredictor, build_box_predictor, instance_clusters
from .common import camera_depth, densify, project_labels, read_label_png, write_label_png
from .labeller import PseudoLabelConfig, PseudoLabels, files_path, write_pseudolabels
from .samplg import SAMPLG, ColorRegionPredictor, MaskPredictor, SamMaskPredictor, build_mask_predictor, make_prompts, stability_score

__all__ = [
    "THING_CLASSES", "HullPredictor", "InstancePainter", "SamBoxPredictor", "build_box_predictor", "instance_clusters",
    "camera_depth", "densify", "project_labels", "read_label_png", "write_label_png", "PseudoLabelConfig",
    "PseudoLabels", "files_path", "write_pseudolabels", "SAMPLG", "ColorRegionPredictor", "MaskPredictor",
    "SamMaskPredictor", "build_mask_predictor", "make_prompts", "stability_score",
]
