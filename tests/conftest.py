import os

import pytest

os.environ.setdefault("PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pipeline/__init__.py


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world shared by the end-to-end tests (a few seconds to write)."""
    from data_manifests.demo_world import make_demo

    out = tmp_path_factory.mktemp("world")
    make_demo(out, seed=3, scale=0.12)
    return out
