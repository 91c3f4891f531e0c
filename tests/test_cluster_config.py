"""The shipped cluster configs pass Ray's own validation, offline.

`prepare_config` fills in Ray's defaults for the provider and merges the setup commands;
`validate_config` checks the result against Ray's JSON schema plus a few cross-field rules.
Neither needs the network, cloud credentials, boto3 or a running Ray.
"""
import copy
import re
import shutil
import subprocess
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
    """raygrid from the synced checkout (or its wheel), with the Keras extra, at the pinned set."""
    return any("cd ~/raygrid-src" in c and "uv pip install" in c and "-c constraints.txt" in c
               and "[keras,plots]" in c for c in commands)


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
    assert config["file_mounts"]["~/raygrid-src"] == "."  # the checkout: raygrid is not on PyPI


def test_gpu_worker_advertises_a_gpu_and_installs_cuda_tensorflow():
    prepared = checked(load(AWS))
    gpu = prepared["available_node_types"]["ray.worker.gpu"]
    assert gpu["resources"]["GPU"] >= 1
    # A node type's own worker_setup_commands replace the shared ones (Ray's autoscaler
    # looks them up per node type), so this list alone must set the node up completely.
    commands = gpu["worker_setup_commands"]
    assert installs_raygrid_with_keras(commands)
    assert commands[: len(load(AWS)["setup_commands"])] == load(AWS)["setup_commands"]
    assert any('"tensorflow[and-cuda]==2.21.0"' in c and "raygrid-src/constraints.txt" in c for c in commands)
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
    assert config["file_mounts"] == load(AWS)["file_mounts"]
    assert config["rsync_exclude"] == load(AWS)["rsync_exclude"]


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


# --- the install step itself, run offline --------------------------------------------------
PYTHON_VERSION = re.search(r"on Python (3\.\d+)", (ROOT / "constraints.txt").read_text()).group(1)


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=lambda p: p.name)
def test_every_setup_command_is_valid_bash(path):
    config = load(path)
    commands = list(config["setup_commands"]) + list(config.get("head_setup_commands") or [])
    for node_type in (config.get("available_node_types") or {}).values():
        commands += node_type.get("worker_setup_commands") or []
    for command in commands:
        done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr}"


def test_nodes_get_the_tested_python():
    venv = load(AWS)["setup_commands"][0]
    assert f"uv venv --python {PYTHON_VERSION} ~/raygrid-env" in venv


def test_outputs_and_virtualenvs_are_not_synced():
    excluded = load(AWS)["rsync_exclude"]
    assert {"/out", "/raygrid-out", "**/.venv", "**/.git"} <= set(excluded)


def _run_install(tmp_path, with_wheel: bool) -> list[str]:
    """Run cluster.yaml's install command with a stand-in `uv` that records its arguments."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    record = tmp_path / "uv-args"
    uv = home / ".local" / "bin" / "uv"
    uv.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    uv.chmod(0o755)
    src = home / "raygrid-src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", "out", "raygrid-out",
                                                              "__pycache__", "dist", "build"))
    if with_wheel:
        (src / "dist").mkdir()
        (src / "dist" / "raygrid-0.1.0-py3-none-any.whl").write_bytes(b"")
    command = load(AWS)["setup_commands"][2]
    done = subprocess.run(["bash", "-c", command], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return record.read_text().split("\n")


def test_the_install_step_installs_the_checkout_with_the_pinned_set(tmp_path):
    args = _run_install(tmp_path, with_wheel=False)
    assert args[:5] == ["pip", "install", "--python", str(tmp_path / "home" / "raygrid-env/bin/python"), "-c"]
    assert args[5] == "constraints.txt" and args[6] == ".[keras,plots]"


def test_the_install_step_prefers_a_wheel_from_make_wheel(tmp_path):
    args = _run_install(tmp_path, with_wheel=True)
    assert args[6] == "dist/raygrid-0.1.0-py3-none-any.whl[keras,plots]"


def test_make_wheel_writes_where_the_install_step_looks():
    dry = subprocess.run(["make", "-n", "wheel"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "pip wheel -q --no-deps -w dist ." in dry.stdout


def test_the_docs_offline_check_runs_as_written():
    """docs/cluster.md's command for checking an edited file offline works on the shipped one."""
    docs = (ROOT / "docs" / "cluster.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", docs, flags=re.S) if "validate_config" in b)
    command = block.replace("\\\n", "").strip()
    assert command.startswith("python -c ")
    done = subprocess.run(["bash", "-c", command.replace("python", sys.executable, 1)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_rsync_down_examples_end_in_slashes():
    """`ray rsync-down SRC DST` is rsync: SRC without a trailing slash lands in DST/<name>/."""
    docs = (ROOT / "docs" / "cluster.md").read_text()
    lines = re.findall(r"^ray rsync-down \S+ (\S+) (\S+)$", docs, flags=re.M)
    assert len(lines) >= 2
    assert all(src.endswith("/") and dst.endswith("/") for src, dst in lines), lines


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=lambda p: p.name)
def test_every_file_mount_exists_in_a_fresh_clone(path):
    """`ray up` hashes every file_mounts source before syncing and stops at a missing one
    (FileNotFoundError: './work'), after the head was launched: each must be in the checkout as
    git has it (tracked files), not only in a working copy where someone created it."""
    mounts = load(path)["file_mounts"]
    assert mounts
    for remote, local in mounts.items():
        listed = subprocess.run(["git", "ls-files", "--", local], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
        assert listed, f"file_mounts {remote!r}: {local!r} has no tracked file (missing in a fresh clone)"


def test_the_work_folder_spec_checks_and_the_docs_say_rsync_is_needed():
    from raygrid.cli.api import check_spec

    prepared = check_spec(ROOT / "work" / "spec.yaml")
    assert prepared.n_candidates == 16
    docs = (ROOT / "docs" / "cluster.md").read_text()
    machine = docs[docs.index("## 1. On your machine"):docs.index("## 2. Start the cluster")]
    assert "**rsync**" in machine and "must be installed" in machine and "rsync --version" in machine
    assert "work/spec.yaml" in machine
