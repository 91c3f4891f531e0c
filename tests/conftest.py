"""Shared fixtures: Ray is started once per test session, never per test."""
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pima-indians-diabetes.csv"


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray runtime for the whole session (``address="local"`` never joins a stale cluster)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    # Left running for other session-scoped users; shut down at interpreter exit.


@pytest.fixture(params=["serial", "ray"])
def backend(request):
    """Each test that takes ``backend`` runs on both raygrid backends (Ray: the session's)."""
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    return request.param


@pytest.fixture(scope="session")
def pima_csv():
    path = Path(os.environ.get("RAYGRID_PIMA", SHARED_DATA))
    if not path.exists():
        pytest.skip(f"Pima CSV not found at {path}")
    return path
