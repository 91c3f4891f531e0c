"""The shipped cluster configs pass Ray's own validation, offline.

`prepare_config` fills in Ray's defaults for the provider and merges the setup commands;
`validate_config` checks the result against Ray's JSON schema plus a few cross-field rules.
Neither needs the network, cloud credentials, boto3 or a running Ray.
"""
import copy
import sys
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AWS = ROOT / "cluster.yaml"
LOCAL = ROOT / "cluster-local.yaml"
FAKE = ROOT / "tests" / "fake_cluster.yaml"


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def checked(config):
    """Ray's own offline check, as `ray up` runs it before touching any machine."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def installs_raygrid_with_keras(commands):
    return any("pip install" in c and "raygrid[keras" in c for c in commands)


@pytest.fixture(autouse=True)
def no_cloud_sdk(monkeypatch):
    """Fail loudly if the check ever starts to need the AWS SDK."""
    for name in ("boto3", "botocore"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=lambda p: p.name)
def test_config_passes_rays_validation(path):
    prepared = checked(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert installs_raygrid_with_keras(prepared["head_setup_commands"])
    assert installs_raygrid_with_keras(prepared["worker_setup_commands"])


def test_aws_provider_and_node_types():
    config = load(AWS)
    assert config["cluster_name"] == "raygrid"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-west-2"
    assert config["provider"]["cache_stopped_nodes"] is True
    types = config["available_node_types"]
    assert set(types) == {"ray.head.default", "ray.worker.cpu", "ray.worker.gpu"}
    for name in ("ray.worker.cpu", "ray.worker.gpu"):
        node_type = types[name]
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
        assert node_type["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]
    assert config["file_mounts"]["~/raygrid-work"] == "./work"


def test_gpu_worker_advertises_a_gpu_and_installs_cuda_tensorflow():
    prepared = checked(load(AWS))
    gpu = prepared["available_node_types"]["ray.worker.gpu"]
    assert gpu["resources"]["GPU"] >= 1
    # A node type's own worker_setup_commands replace the shared ones (Ray's autoscaler
    # looks them up per node type), so this list alone must set the node up completely.
    commands = gpu["worker_setup_commands"]
    assert installs_raygrid_with_keras(commands)
    assert commands[: len(load(AWS)["setup_commands"])] == load(AWS)["setup_commands"]
    assert any('"tensorflow[and-cuda]==2.21.0"' in c for c in commands)
    # CPU workers get the plain (shared) setup, no CUDA wheels.
    cpu = prepared["available_node_types"]["ray.worker.cpu"]
    assert "worker_setup_commands" not in cpu
    assert not any("and-cuda" in c for c in prepared["worker_setup_commands"])


def test_local_config_lists_machines_and_ssh_auth():
    config = load(LOCAL)
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"]
    assert config["provider"]["worker_ips"]
    assert {"ssh_user", "ssh_private_key"} <= set(config["auth"])
    # Same raygrid install as the cloud config.
    assert config["setup_commands"][:3] == load(AWS)["setup_commands"]


def test_fake_cluster_config_is_complete_for_the_autoscaler():
    # Ray ships no defaults for the fake_multinode provider and its autoscaler reads the file
    # as is, so the raw file itself must pass the schema.
    config = load(FAKE)
    validate_config(config)
    assert config["provider"]["type"] == "fake_multinode"
    assert config["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] == 1
    port = int(config["provider"]["gcs_address"].rsplit(":", 1)[1])
    assert not 10002 <= port <= 19999  # Ray's default worker-port range


# --- the check has teeth -------------------------------------------------------------


def _misspelled_top_level_key(config):
    config["setup_comands"] = config.pop("setup_commands")


def _misspelled_node_type_key(config):
    config["available_node_types"]["ray.worker.cpu"]["max_worker"] = 8


def _more_min_workers_than_max_workers(config):
    config["available_node_types"]["ray.worker.cpu"]["min_workers"] = config["max_workers"] + 1


def _unknown_head_node_type(config):
    config["head_node_type"] = "ray.head.missing"


def _fractional_gpu_resource(config):
    config["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = 0.5


def _unknown_provider(config):
    config["provider"]["type"] = "no-such-cloud"


@pytest.mark.parametrize(
    "break_it, error",
    [
        (_misspelled_top_level_key, jsonschema.ValidationError),
        (_misspelled_node_type_key, jsonschema.ValidationError),
        (_fractional_gpu_resource, jsonschema.ValidationError),
        (_more_min_workers_than_max_workers, ValueError),
        (_unknown_head_node_type, ValueError),
        (_unknown_provider, NotImplementedError),
    ],
    ids=lambda v: v.__name__.strip("_"),
)
def test_broken_copies_are_rejected(break_it, error):
    config = load(AWS)
    break_it(config)
    with pytest.raises(error):
        checked(config)
