"""A local Ray (2 CPUs, no dashboard) shared by the tests of one module: starting it costs seconds."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()  # a Ray an earlier test left running is reused, and left to its owner
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
