"""A sample inspected without its face mesh (the call checks no liveness) still gets a liveness
check right: the liveness service computes the mesh from the stored sample then."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bws.service import EnginePool
from bws.settings import LivenessSettings
from bws.storage import ObjectStore
from bws.v1 import common_pb2, liveness_pb2
from liveness_service.server import LivenessEngine, LivenessServicer
from tests import facegen

pytestmark = pytest.mark.integration


async def test_a_liveness_check_of_samples_inspected_without_landmarks_computes_them(store: ObjectStore) -> None:
    pool: EnginePool[LivenessEngine] = EnginePool(LivenessEngine.load, 1, 4)
    pool.warm()
    servicer = LivenessServicer(LivenessSettings(storage=store.settings), store, pool)
    frames = facegen.live_sequence(facegen.source_photo("astronaut"), ["left", "right"],
                                   rng=np.random.default_rng(3))
    refs = []
    for index, frame in enumerate(frames[:2]):
        data = cv2.imencode(".png", frame)[1].tobytes()
        key = store.put_sample("skip-landmarks", index, "any", data, "image/png")
        reply = await servicer._inspect(key, data, landmarks=False)
        assert reply.accepted
        analysis = servicer.recent.get(key)
        assert analysis is not None and analysis.mesh is None and not analysis.landmarked
        refs.append(common_pb2.SampleRef(key=key, tag="any", index=index))
    checked = await servicer._check(liveness_pb2.CheckLivenessRequest(samples=refs))
    assert checked.usable_samples == 2  # meshes computed from the stored samples
    assert checked.live, checked.errors
    pool.close()
