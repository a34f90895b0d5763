"""Synthetic face sequences (live head turns and photo attacks) for tests and benchmarks; see render.py."""

from tests.facegen.render import (
    ATTACKS,
    DIRECTIONS,
    FaceRig,
    camera,
    face_engine,
    live_sequence,
    meshes_of,
    photo_bent,
    photo_blurred,
    photo_moved,
    photo_rescaled,
    photo_tilted,
    rig_for,
    screen_replay,
    source_photo,
    static_frames,
)

__all__ = [
    "ATTACKS",
    "DIRECTIONS",
    "FaceRig",
    "camera",
    "face_engine",
    "live_sequence",
    "meshes_of",
    "photo_bent",
    "photo_blurred",
    "photo_moved",
    "photo_rescaled",
    "photo_tilted",
    "rig_for",
    "screen_replay",
    "source_photo",
    "static_frames",
]
