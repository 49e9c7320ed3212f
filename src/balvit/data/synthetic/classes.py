"""Semantic classes of the synthetic street world and their ids in the SemanticKITTI and nuScenes-lidarseg
label sets.

The world knows generic object kinds ("car", "sidewalk", "traffic-cone", ...). Each kind maps to a
SemanticKITTI raw id (a static and, for things that can move, a moving id: the label format of
Behley et al., ICCV 2019, semantic-kitti.yaml) and to a nuScenes fine category name (category.json of
nuScenes-lidarseg, Fong et al. 2021); the category index is read from balvit/data/labels/nuscenes.yaml.
Each kind also carries the material facts the sensors need: a LiDAR albedo (reflectivity at normal
incidence, 0..1) and a camera base colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import load_yaml


@dataclass(frozen=True)
class WorldClass:
    name: str
    kitti: int  # SemanticKITTI raw id when static
    kitti_moving: int  # raw id when moving (= kitti for kinds that never move)
    nuscenes: str  # nuScenes fine category name
    albedo: tuple[float, float]  # LiDAR reflectivity range (instances draw from it)
    color: tuple[int, int, int]  # camera base colour (instances vary around it)
    thing: bool  # gets an instance id


# fmt: off
CLASSES: tuple[WorldClass, ...] = (
    WorldClass("road",                 40,  40, "flat.driveable_surface",  (0.07, 0.13), (78, 78, 82),    False),
    WorldClass("lane-marking",         60,  60, "flat.driveable_surface",  (0.55, 0.80), (225, 225, 215), False),
    WorldClass("parking",              44,  44, "flat.driveable_surface",  (0.14, 0.20), (98, 96, 100),   False),
    WorldClass("sidewalk",             48,  48, "flat.sidewalk",           (0.24, 0.34), (165, 160, 152), False),
    WorldClass("other-ground",         49,  49, "flat.other",              (0.18, 0.26), (140, 125, 105), False),
    WorldClass("terrain",              72,  72, "flat.terrain",            (0.34, 0.48), (105, 135, 60),  False),
    WorldClass("building",             50,  50, "static.manmade",          (0.15, 0.45), (190, 170, 150), False),
    WorldClass("fence",                51,  51, "static.manmade",          (0.18, 0.40), (120, 105, 90),  False),
    WorldClass("other-structure",      52,  52, "static.manmade",          (0.20, 0.40), (150, 150, 160), False),
    WorldClass("vegetation",           70,  70, "static.vegetation",       (0.40, 0.62), (55, 110, 40),   False),
    WorldClass("trunk",                71,  71, "static.vegetation",       (0.20, 0.30), (95, 70, 50),    False),
    WorldClass("pole",                 80,  80, "static.manmade",          (0.25, 0.38), (130, 130, 135), False),
    WorldClass("traffic-sign",         81,  81, "static.manmade",          (0.85, 0.98), (200, 30, 30),   False),
    WorldClass("car",                  10, 252, "vehicle.car",             (0.05, 0.60), (150, 150, 160), True),
    WorldClass("truck",                18, 258, "vehicle.truck",           (0.20, 0.50), (210, 210, 205), True),
    WorldClass("bus",                  13, 257, "vehicle.bus.rigid",       (0.25, 0.45), (230, 200, 40),  True),
    WorldClass("trailer",              20, 259, "vehicle.trailer",         (0.20, 0.45), (200, 200, 200), True),
    WorldClass("construction-vehicle", 20, 259, "vehicle.construction",    (0.30, 0.55), (235, 170, 20),  True),
    WorldClass("bicycle",              11,  11, "vehicle.bicycle",         (0.15, 0.30), (40, 60, 140),   True),
    WorldClass("motorcycle",           15,  15, "vehicle.motorcycle",      (0.15, 0.40), (30, 30, 35),    True),
    WorldClass("person",               30, 254, "human.pedestrian.adult",  (0.10, 0.35), (70, 60, 90),    True),
    WorldClass("construction-worker",  30, 254, "human.pedestrian.construction_worker", (0.30, 0.60), (250, 140, 20), True),
    WorldClass("bicyclist",            31, 253, "vehicle.bicycle",         (0.12, 0.35), (180, 40, 40),   True),
    WorldClass("motorcyclist",         32, 255, "vehicle.motorcycle",      (0.12, 0.35), (25, 25, 30),    True),
    WorldClass("barrier",              52,  52, "movable_object.barrier",  (0.30, 0.55), (215, 215, 210), False),
    WorldClass("traffic-cone",         99,  99, "movable_object.trafficcone", (0.50, 0.75), (245, 110, 20), False),
    WorldClass("trash-bin",            99,  99, "movable_object.pushable_pullable", (0.15, 0.35), (50, 90, 60), False),
    WorldClass("bench",                99,  99, "static.manmade",          (0.15, 0.30), (110, 80, 55),   False),
    WorldClass("ego",                   0,   0, "vehicle.ego",             (0.15, 0.25), (60, 60, 70),    False),
)
# fmt: on

CLASS_ID: dict[str, int] = {c.name: i for i, c in enumerate(CLASSES)}
NUM_CLASSES = len(CLASSES)
GROUND_CLASSES = ("road", "lane-marking", "parking", "sidewalk", "other-ground", "terrain")


def cid(name: str) -> int:
    """World class id of a kind name."""
    return CLASS_ID[name]


def kitti_tables() -> tuple[np.ndarray, np.ndarray]:
    """(static, moving) lookup arrays world class id -> SemanticKITTI raw id, each (NUM_CLASSES,) uint32."""
    static = np.array([c.kitti for c in CLASSES], dtype=np.uint32)
    moving = np.array([c.kitti_moving for c in CLASSES], dtype=np.uint32)
    return static, moving


def nuscenes_table() -> np.ndarray:
    """World class id -> nuScenes category index (official indices from labels/nuscenes.yaml), (NUM_CLASSES,) uint8."""
    cats = load_yaml("nuscenes")["categories"]
    return np.array([cats[c.nuscenes]["index"] for c in CLASSES], dtype=np.uint8)


def albedo_range() -> np.ndarray:
    """(NUM_CLASSES, 2) float32 albedo ranges."""
    return np.array([c.albedo for c in CLASSES], dtype=np.float32)


def base_colors() -> np.ndarray:
    """(NUM_CLASSES, 3) float32 RGB 0..1."""
    return np.array([c.color for c in CLASSES], dtype=np.float32) / 255.0
