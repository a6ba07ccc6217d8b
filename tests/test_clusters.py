"""The deployable cluster configs in clusters/: static checks, no Ray cluster is started.

* Ray cluster-launcher YAMLs (aws.yaml, gcp.yaml): Ray's own JSON schema (shipped inside the ray
  package) and Ray's config preparation, a GPU worker type, the `ray start` flags, and no
  world-open dashboard port.
* KubeRay manifests (kuberay/*.yaml): the ray.io/v1 fields raytraj relies on, GPU workers, token
  auth, no dashboard on 0.0.0.0 and no LoadBalancer/NodePort exposure, and RayJob entrypoints that
  raytraj's own CLI parser accepts.
* local-multinode.sh: syntax, executable bit, and usage output without starting anything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import jsonschema  # a dependency of ray
import pytest
import yaml  # a dependency of ray

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHER_CONFIGS = [CLUSTERS / "aws.yaml", CLUSTERS / "gcp.yaml"]
KUBERAY_DIR = CLUSTERS / "kuberay"
KUBERAY_MANIFESTS = sorted(KUBERAY_DIR.glob("*.yaml"))
SCRIPT = CLUSTERS / "local-multinode.sh"
DASHBOARD_PORT = 8265
LOOPBACK = {"127.0.0.1", "localhost"}


def _ids(paths):
    return [str(p.relative_to(CLUSTERS)) for p in paths]


def _load(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def _walk(obj):
    """Every dict, list and scalar nested in obj."""
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _strings(obj):
    return [x for x in _walk(obj) if isinstance(x, str)]


def _dashboard_hosts(text: str) -> list[str]:
    return re.findall(r"--dashboard-host[= ]+['\"]?([^\s'\";]+)", text)


def test_expected_files_exist():
    for path in [*LAUNCHER_CONFIGS, KUBERAY_DIR / "raycluster.yaml", KUBERAY_DIR / "rayjob.yaml",
                 SCRIPT, CLUSTERS / "README.md"]:
        assert path.is_file(), path
    assert len(KUBERAY_MANIFESTS) >= 2


# --------------------------------------------------------------------------------------------
# Ray cluster launcher configs
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_schema():
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def _ray_start_commands(cfg, key):
    return [c for c in cfg.get(key, []) if "ray start" in c]


def _open_to_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _world_open_dashboard_rules(cfg) -> list:
    """Firewall-like rules anywhere in cfg that open the dashboard port to the whole internet.

    Understands AWS IpPermissions ({FromPort, ToPort, IpProtocol, IpRanges/Ipv6Ranges}) and GCP
    firewall rules ({sourceRanges, allowed: [{IPProtocol, ports}]}).
    """
    bad = []
    for node in _walk(cfg):
        if not isinstance(node, dict):
            continue
        if "IpRanges" in node or "Ipv6Ranges" in node:  # AWS
            cidrs = [r.get("CidrIp", "") for r in node.get("IpRanges", [])]
            cidrs += [r.get("CidrIpv6", "") for r in node.get("Ipv6Ranges", [])]
            if not any(_open_to_world(c) for c in cidrs):
                continue
            if str(node.get("IpProtocol", "tcp")) == "-1":
                bad.append(node)  # all protocols, all ports
                continue
            lo, hi = node.get("FromPort", -1), node.get("ToPort", -1)
            if lo == -1 or lo <= DASHBOARD_PORT <= hi:
                bad.append(node)
        if "sourceRanges" in node:  # GCP firewall
            if not any(_open_to_world(c) for c in node["sourceRanges"]):
                continue
            for allowed in node.get("allowed", []):
                ports = allowed.get("ports")
                if allowed.get("IPProtocol") == "all" or not ports:
                    bad.append(node)
                    break
                for p in map(str, ports):
                    lo, _, hi = p.partition("-")
                    if int(lo) <= DASHBOARD_PORT <= int(hi or lo):
                        bad.append(node)
                        break
    return bad


def test_world_open_rule_detector_flags_bad_rules():
    aws_bad = {"provider": {"security_group": {"IpPermissions": [
        {"FromPort": 8000, "ToPort": 9000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}}}
    aws_ok = {"provider": {"security_group": {"IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}}}
    gcp_bad = {"firewall": {"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "tcp", "ports": ["8265"]}]}}
    assert _world_open_dashboard_rules(aws_bad)
    assert _world_open_dashboard_rules(gcp_bad)
    assert not _world_open_dashboard_rules(aws_ok)


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=_ids(LAUNCHER_CONFIGS))
class TestLauncherConfig:
    def test_matches_ray_schema(self, path, ray_schema):
        cfg = _load(path)
        jsonschema.validate(cfg, ray_schema)
        assert cfg["provider"]["type"] in {"aws", "gcp"}
        assert cfg["head_node_type"] in cfg["available_node_types"]

    def test_ray_prepares_and_validates_it(self, path):
        # What `ray up` does before touching the cloud: merge the provider's defaults, validate.
        from ray.autoscaler._private.util import prepare_config, validate_config

        prepared = prepare_config(_load(path))
        validate_config(prepared)
        assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0

    def test_gpu_worker_type(self, path):
        cfg = _load(path)
        types = cfg["available_node_types"]
        head = types[cfg["head_node_type"]]
        assert head["resources"].get("GPU", 0) == 0, "the head should be a CPU node"
        gpu_types = {k: t for k, t in types.items()
                     if k != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1}
        assert gpu_types, "no worker node type requests GPUs"
        for name, t in gpu_types.items():
            assert 0 <= t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"], name
            assert t["max_workers"] >= 1, name
            node = t["node_config"]
            if cfg["provider"]["type"] == "aws":
                assert re.match(r"(g4dn|g5|g6|g6e|p3|p4d|p5)\.", node["InstanceType"]), node
            else:
                accel = node.get("guestAccelerators", [])
                assert accel or node["machineType"].startswith(("a2-", "a3-", "g2-")), node
                if accel:
                    assert accel[0]["acceleratorCount"] >= 1
                    # GPU VMs cannot live-migrate; the Compute API wants an object here.
                    assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"
        docker = cfg.get("docker", {})
        if docker:
            assert "gpu" in docker.get("worker_image", docker.get("image", "")), docker

    def test_installs_raytraj_and_torch(self, path):
        cfg = _load(path)
        head = " ".join(cfg.get("setup_commands", []) + cfg.get("head_setup_commands", []))
        worker = " ".join(cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", []))
        for cmds in (head, worker):
            assert re.search(r"pip install .*raytraj", cmds), cmds
            assert re.search(r"pip install .*torch==", cmds), cmds
        # The GPU workers must not get the CPU-only torch wheel.
        worker_torch = [c for c in cfg["worker_setup_commands"] if "torch==" in c]
        assert worker_torch and not any("whl/cpu" in c for c in worker_torch)

    def test_raytraj_comes_from_this_repository(self, path):
        """Not an imaginary git URL or an unpublished PyPI name: the wheel built from this repo
        (`pip wheel --no-deps -w dist .`), shipped to every node by file_mounts."""
        cfg = _load(path)
        installs = [c for c in cfg.get("head_setup_commands", []) + cfg.get("worker_setup_commands", [])
                    if re.search(r"pip install .*raytraj", c)]
        assert installs
        mounts = {os.path.expanduser(k): v for k, v in cfg["file_mounts"].items()}
        for cmd in installs:
            assert "git+" not in cmd and not re.search(r"install (--\S+ )*[\"']?raytraj\b", cmd), cmd
            wheel = re.search(r"(\S+)/raytraj-\*\.whl", cmd).group(1)
            assert wheel in mounts, (wheel, mounts)
            local = (ROOT / mounts[wheel]).resolve()
            assert local.is_relative_to(ROOT) and local.name == "dist", mounts[wheel]
        assert "pip wheel --no-deps -w dist ." in path.read_text()

    def test_head_runs_no_trials(self, path):
        head = _ray_start_commands(_load(path), "head_start_ray_commands")
        assert head and all("--num-cpus=0" in c for c in head)

    def test_ray_start_flags(self, path):
        cfg = _load(path)
        head = _ray_start_commands(cfg, "head_start_ray_commands")
        worker = _ray_start_commands(cfg, "worker_start_ray_commands")
        assert head and worker
        for cmd in head + worker:
            assert "--disable-usage-stats" in cmd, cmd
            assert "RAY_USAGE_STATS_ENABLED=0" in cmd, cmd
            assert "RAY_AUTH_MODE=token" in cmd, cmd
        assert all("--head" in c for c in head)
        assert all("--address=$RAY_HEAD_IP" in c for c in worker)
        hosts = [h for c in head for h in _dashboard_hosts(c)]
        assert hosts and set(hosts) <= LOOPBACK, hosts
        assert not [h for c in worker for h in _dashboard_hosts(c)]

    def test_no_world_open_dashboard(self, path):
        cfg = _load(path)
        assert _world_open_dashboard_rules(cfg) == []
        for s in _strings(cfg):
            for host in _dashboard_hosts(s):
                assert host in LOOPBACK, s
        sg = cfg["provider"].get("security_group", {})
        for rule in sg.get("IpPermissions", []):
            assert not rule.get("FromPort", -1) <= DASHBOARD_PORT <= rule.get("ToPort", -1), rule

    def test_token_auth_and_usage_stats_in_containers(self, path):
        cfg = _load(path)
        # The token reaches every node through file_mounts; Ray reads ~/.ray/auth_token.
        assert "~/.ray/auth_token" in cfg["file_mounts"]
        run_options = " ".join(cfg.get("docker", {}).get("run_options", []))
        if cfg.get("docker"):
            assert "RAY_USAGE_STATS_ENABLED=0" in run_options
            assert "RAY_AUTH_MODE=token" in run_options


# --------------------------------------------------------------------------------------------
# KubeRay manifests
# --------------------------------------------------------------------------------------------

# Fields of the ray.io/v1 types as of KubeRay 1.5 (ray-operator/apis/ray/v1): a typo or a field
# from a newer operator would be rejected or pruned by the CRD.
RAYCLUSTER_SPEC_FIELDS = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headServiceAnnotations",
                          "headGroupSpec", "workerGroupSpecs", "suspend", "managedBy",
                          "gcsFaultToleranceOptions", "authOptions"}
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_FIELDS = {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                       "rayStartParams", "template", "scaleStrategy", "numOfHosts", "suspend"}
RAYJOB_SPEC_FIELDS = {"entrypoint", "runtimeEnvYAML", "jobId", "metadata", "shutdownAfterJobFinishes",
                      "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec",
                      "clusterSelector", "submitterPodTemplate", "submitterConfig", "submissionMode",
                      "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "suspend", "managedBy"}
# core/v1 Container fields used in these manifests (and the usual others).
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "workingDir", "env", "envFrom",
                    "ports", "resources", "volumeMounts", "lifecycle", "livenessProbe", "readinessProbe",
                    "startupProbe", "securityContext"}
EXPOSING_SERVICE_TYPES = {"LoadBalancer", "NodePort"}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _all_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _docs(path):
    """The Ray resources of a manifest (RayCluster, RayJob), without its NetworkPolicies."""
    return [d for d in _all_docs(path) if d.get("apiVersion", "").startswith("ray.io/")]


def _cluster_spec(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(group):
    return group["template"]["spec"]["containers"]


def _gpu_limit(container) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_kuberay_manifests_cover_both_kinds():
    kinds = {d["kind"] for p in KUBERAY_MANIFESTS for d in _docs(p)}
    assert {"RayCluster", "RayJob"} <= kinds


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=_ids(KUBERAY_MANIFESTS))
class TestKubeRayManifest:
    def test_required_fields(self, path):
        docs = _docs(path)
        assert docs
        for doc in docs:
            assert doc["apiVersion"] == "ray.io/v1"
            assert doc["kind"] in {"RayCluster", "RayJob"}
            assert DNS_1123.match(doc["metadata"]["name"]), doc["metadata"]
            spec = _cluster_spec(doc)
            assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, set(spec) - RAYCLUSTER_SPEC_FIELDS
            head = spec["headGroupSpec"]
            assert set(head) <= HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
            # rayStartParams is map[string]string: an unquoted number or bool is rejected.
            assert isinstance(head["rayStartParams"], dict)
            assert all(isinstance(v, str) for v in head["rayStartParams"].values()), head["rayStartParams"]
            assert _containers(head) and all(c.get("image") for c in _containers(head))
            assert spec["workerGroupSpecs"]
            for group in spec["workerGroupSpecs"]:
                assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
                assert DNS_1123.match(group["groupName"])
                assert isinstance(group["rayStartParams"], dict)
                assert all(isinstance(v, str) for v in group["rayStartParams"].values())
                for k in ("replicas", "minReplicas", "maxReplicas"):
                    assert isinstance(group[k], int), (k, group[k])
                assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
                assert _containers(group) and all(c.get("image") for c in _containers(group))
            for group in [head, *spec["workerGroupSpecs"]]:
                for c in _containers(group):
                    assert set(c) <= CONTAINER_FIELDS, set(c) - CONTAINER_FIELDS

    def test_gpu_worker_group(self, path):
        for doc in _docs(path):
            spec = _cluster_spec(doc)
            assert not any(_gpu_limit(c) for c in _containers(spec["headGroupSpec"])), "CPU head expected"
            gpu_containers = [c for g in spec["workerGroupSpecs"] for c in _containers(g) if _gpu_limit(c) >= 1]
            assert gpu_containers, "no worker container with nvidia.com/gpu in resources.limits"
            for c in gpu_containers:
                assert "gpu" in c["image"].rsplit(":", 1)[-1], c["image"]

    def test_images_match_ray_version(self, path):
        for doc in _docs(path):
            spec = _cluster_spec(doc)
            version = spec["rayVersion"]
            for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
                for c in _containers(group):
                    if c["image"].startswith("rayproject/ray"):
                        assert c["image"].split(":", 1)[1].startswith(version + "-"), c["image"]

    def test_usage_stats_off_and_token_auth(self, path):
        for doc in _docs(path):
            spec = _cluster_spec(doc)
            assert spec["authOptions"]["mode"] == "token"
            for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
                for c in _containers(group):
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    assert env.get("RAY_USAGE_STATS_ENABLED") == "0", c["name"]
                    assert env.get("RAY_AUTH_MODE") in (None, "token"), c["name"]

    def test_dashboard_not_exposed(self, path):
        for doc in _docs(path):
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") not in EXPOSING_SERVICE_TYPES
                continue
            spec = _cluster_spec(doc)
            head = spec["headGroupSpec"]
            host = head["rayStartParams"].get("dashboard-host")
            assert host != "0.0.0.0"
            if doc["kind"] == "RayCluster":
                assert host in LOOPBACK, host
            assert head.get("serviceType", "ClusterIP") not in EXPOSING_SERVICE_TYPES
            assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") not in EXPOSING_SERVICE_TYPES
            assert head.get("enableIngress") is not True
            for s in _strings(doc):
                assert "--dashboard-host=0.0.0.0" not in s
                assert "type: LoadBalancer" not in s and "type: NodePort" not in s

    def test_install_commands(self, path):
        for doc in _docs(path):
            spec = _cluster_spec(doc)
            for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
                for c in _containers(group):
                    if "command" not in c:
                        continue  # an image with raytraj baked in
                    cmd = " ".join(c["command"] + c.get("args", []))
                    assert "raytraj" in cmd and "torch==" in cmd, cmd
                    # KubeRay appends `&& <ray start>`: a failed install must stop the pod.
                    assert cmd.rstrip().endswith("|| exit 1"), cmd
                    assert ("whl/cpu" in cmd) == (_gpu_limit(c) == 0), cmd

    def test_pods_run_the_image_built_from_this_repository(self, path):
        """clusters/Dockerfile pip-installs this repository's source into Ray's image; no pod
        installs raytraj from an imaginary git URL or an unpublished PyPI name."""
        assert "git+" not in path.read_text()
        for doc in _docs(path):
            spec = _cluster_spec(doc)
            for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
                for c in _containers(group):
                    repo, tag = c["image"].rsplit(":", 1)
                    assert repo.rsplit("/", 1)[-1] == "raytraj", c["image"]
                    assert tag.endswith("-gpu" if _gpu_limit(c) else "-cpu"), c["image"]

    def test_head_runs_no_trials(self, path):
        for doc in _docs(path):
            assert _cluster_spec(doc)["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"


def test_dockerfile_installs_this_repository():
    text = (CLUSTERS / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-py311-\$\{VARIANT\}$", text, re.M)
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) (\S+)$", text, re.M)
    sources = {src for srcs, _ in copied for src in srcs.split()}
    assert {"pyproject.toml", "raytraj"} <= sources and all((ROOT / src).exists() for src in sources)
    target = copied[0][1].rstrip("/")
    assert re.search(rf"pip install --no-cache-dir {re.escape(target)}\b", text)
    assert "torch==2.13.0" in text and "whl/cpu" in text


@pytest.mark.parametrize("path", [p for p in KUBERAY_MANIFESTS if any(d["kind"] == "RayJob" for d in _docs(p))],
                         ids=lambda p: p.name)
def test_rayjob_has_a_network_policy_for_its_pods(path):
    job = next(d for d in _docs(path) if d["kind"] == "RayJob")["metadata"]["name"]
    policies = [d for d in _all_docs(path) if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 1 and policies[0]["apiVersion"] == "networking.k8s.io/v1"
    spec = policies[0]["spec"]
    own = {"ray.io/originated-from-cr-name": job, "ray.io/originated-from-crd": "RayJob"}
    assert spec["podSelector"]["matchLabels"] == own and spec["policyTypes"] == ["Ingress"]
    peers = [p for rule in spec["ingress"] for p in rule["from"]]
    assert {"podSelector": {"matchLabels": own}} in peers
    assert any(p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "kuberay-operator"}
               for p in peers)
    assert all("ipBlock" not in p for p in peers)  # nothing from outside the Kubernetes cluster


RAYJOBS = [p for p in KUBERAY_MANIFESTS if any(d["kind"] == "RayJob" for d in _docs(p))]


@pytest.fixture(scope="module")
def raytraj_parser():
    from raytraj.cli import build_parser

    return build_parser()


def _subcommands(parser) -> set[str]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


@pytest.mark.parametrize("path", RAYJOBS, ids=_ids(RAYJOBS))
def test_rayjob(path, raytraj_parser):
    (job,) = [d for d in _docs(path) if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert "rayClusterSpec" in spec
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "raytraj"], argv
    command = argv[3]
    if command == "transfer":
        assert argv[argv.index("--backend") + 1] == "ray"
        gpus = float(argv[argv.index("--gpus-per-worker") + 1])
        workers = int(argv[argv.index("--workers") + 1])
        group_gpus = sum(g["maxReplicas"] * max(_gpu_limit(c) for c in _containers(g))
                         for g in spec["rayClusterSpec"]["workerGroupSpecs"])
        assert workers * gpus <= group_gpus, "the transfer asks for more GPUs than the cluster can have"
    if command in ("ensemble", "sweep"):  # trials on the GPU workers, said explicitly
        assert float(argv[argv.index("--gpus-per-trial") + 1]) >= 1
    if command not in _subcommands(raytraj_parser):
        pytest.skip(f"`raytraj {command}` is not in this raytraj's CLI yet")
    args = raytraj_parser.parse_args(argv[3:])  # SystemExit on an unknown or missing flag
    assert args.command == command


# --------------------------------------------------------------------------------------------
# local-multinode.sh
# --------------------------------------------------------------------------------------------

def test_script_is_executable_bash():
    mode = SCRIPT.stat().st_mode
    assert mode & stat.S_IXUSR, "clusters/local-multinode.sh is not executable"
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_settings():
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    for needle in ("--disable-usage-stats", "--include-dashboard=true", "RAY_USAGE_STATS_ENABLED=0",
                   "RAY_AUTH_MODE=token", "--node-ip-address=127.0.0.1", "--block"):
        assert needle in text, needle
    # The dashboard serves `ray job submit`; it listens on loopback only.
    assert _dashboard_hosts(text) == ["127.0.0.1"]
    # Never a global `ray stop`: it would kill other people's Ray processes on the machine.
    assert not re.search(r"^\s*[^#\n]*\bray stop\b", text, re.M)


@pytest.fixture
def fake_ray_env(tmp_path):
    """PATH with a `ray` that only records that it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ray-was-called"
    fake = bin_dir / "ray"
    fake.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               RAYTRAJ_LOCAL_CLUSTER_DIR=str(tmp_path / "state"))
    return env, marker, tmp_path / "state"


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["help"], 0), ([], 2), (["bogus"], 2)])
def test_script_usage_starts_nothing(argv, code, fake_ray_env):
    env, marker, state = fake_ray_env
    r = subprocess.run(["bash", str(SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == code, r
    out = r.stdout + r.stderr
    assert "Usage:" in out
    for word in ("start", "stop", "--workers"):
        assert word in out
    assert not marker.exists(), "the usage path ran ray"
    assert not state.exists(), "the usage path created the state dir"


def test_script_stop_without_cluster_is_harmless(fake_ray_env):
    env, marker, state = fake_ray_env
    r = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    assert "No running nodes" in r.stdout
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

def test_readme_covers_every_file_and_the_security_notes():
    text = (CLUSTERS / "README.md").read_text()
    for path in [*LAUNCHER_CONFIGS, *KUBERAY_MANIFESTS, SCRIPT]:
        assert path.name in text, path.name
    for needle in ("ray up clusters/aws.yaml", "ray dashboard clusters/aws.yaml",
                   "kubectl apply -f clusters/kuberay/rayjob.yaml", "--dashboard-host=127.0.0.1",
                   "RAY_AUTH_MODE=token", "EDIT ME"):
        assert needle in text, needle
