"""Camera pseudo-labels from labelled LiDAR points.

  - common.py: projection into a z-buffered sparse label image, densification, pixel scoring
    against true per-pixel classes, label PNGs (shared by both labellers);
  - boxes.py: MultiViT's labeller (Ando et al., CVPR 2023): densified projection + SAM / stand-in
    masks from 3D instance box prompts (config section `pseudo_labels`, `PseudoLabelConfig`);
  - samplg.py: ELiTe's SAM-PLG (Zhang et al., ICME 2024): point + mask prompts from the sparse
    labels (config section `elite.pseudo_labels`, `SamPLGConfig`), the camera-label dataset and the
    `balvit pseudolabels` command.

SAM itself (building a transformers SamModel, running it on prompts) is models/sam.py.
"""

from .boxes import (THING_CLASSES, HullPredictor, PseudoLabeller, SamBoxPredictor, build_predictor,
                    instance_clusters, label_image_miou)
from .common import (camera_depth, densify, pixel_confusion, pixel_scores, project_labels, read_label_png,
                     write_label_png)
from .samplg import (SAMPLG, CameraLabelDataset, CameraLabels, ColorRegionPredictor, MaskPredictor, SamMaskPredictor,
                     build_mask_predictor, make_prompts, pseudo_label_path, stability_score, write_pseudolabels)

__all__ = [
    "THING_CLASSES", "HullPredictor", "PseudoLabeller", "SamBoxPredictor", "build_predictor", "instance_clusters",
    "label_image_miou", "camera_depth", "densify", "pixel_confusion", "pixel_scores", "project_labels",
    "read_label_png", "write_label_png", "SAMPLG", "CameraLabelDataset", "CameraLabels", "ColorRegionPredictor",
    "MaskPredictor", "SamMaskPredictor", "build_mask_predictor", "make_prompts", "pseudo_label_path",
    "stability_score", "write_pseudolabels",
]
