"""``deploy/kubernetes`` and the ``Dockerfile`` (docs/deploy.md) against the real broker.

Every manifest of the base and of each rendered overlay validates against the Kubernetes
schemas that ``kubernetes-validate`` ships (strict: unknown fields fail). The broker
container's args, environment and ConfigMap go through the broker's own loader
(``felix_server.config.load_config``), so every flag and key in the manifests exists, and
the resulting configuration must agree with the manifests: container ports, probe ports
and paths, the Service target ports, the mounted TLS files and data directory, the memory
limit and the termination grace period. The ``exchange`` overlay's exchange file goes
through the broker's exchange loader, and its example client's projected token and
``felix login`` command line must fit it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_render import Manifest, load_documents, render

from felix_server.config import ConfigError, ServerConfig, build_parser, load_config

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["single", "cluster", "exchange"]
KUBERNETES_VERSIONS = ["1.30", "1.37"]
"""The oldest release the manifests target (preStop exec, PDB policy/v1, sizeLimit ...)
and the newest schema kubernetes-validate ships."""
POD_NAME = "felix-0"
SECRET_VALUE = "secret-from-kubernetes"


def _overlay(name: str) -> list[Manifest]:
    return render(KUBE / "overlays" / name)


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _broker_container(objects: list[Manifest]) -> dict[str, Any]:
    spec = _one(objects, "StatefulSet", "felix")["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "felix"]
    return dict(container)


def _patch_files() -> set[Path]:
    """Files a kustomization applies as patches (partial objects, validated once merged)."""
    patches = set()
    for kustomization in KUBE.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            patches.add(kustomization.parent / patch["path"])
    return patches


def _all_manifest_files() -> list[Path]:
    """Every whole-object manifest file (not kustomizations, not patches)."""
    skip = _patch_files()
    return sorted(
        p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml" and p not in skip
    )


# ------------------------------------------------------------------------ the schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", _all_manifest_files(), ids=lambda p: str(p.relative_to(KUBE)))
def test_every_manifest_file_validates(path: Path, version: str) -> None:
    docs = load_documents(path)
    assert docs, path
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay: str, version: str) -> None:
    objects = _overlay(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} <= (
        kinds
    )
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "felix"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_python_rendering_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python rendering is checked on its own")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBE / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    theirs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def key(obj: Manifest) -> tuple[str, str]:
        return (obj["kind"], obj["metadata"]["name"])

    assert sorted(map(key, theirs)) == sorted(map(key, _overlay(overlay)))
    ours = {key(obj): obj for obj in _overlay(overlay)}
    for obj in theirs:
        assert obj == ours[key(obj)], key(obj)


# ------------------------------------------------- the broker's view of the manifests


def _effective_config(objects: list[Manifest]) -> ServerConfig:
    """Load the broker container's configuration as the broker would in the pod."""
    container = _broker_container(objects)
    pod = _one(objects, "StatefulSet", "felix")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files: dict[str, bytes] = {}
    for mount in container["volumeMounts"]:
        source = volumes.get(mount["name"], {}).get("configMap")
        if source:
            data = _one(objects, "ConfigMap", source["name"])["data"]
            for name, text in data.items():
                files[f"{mount['mountPath']}/{name}"] = text.encode()
    env: dict[str, str] = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = POD_NAME
        elif "secretKeyRef" in ref:
            env[var["name"]] = SECRET_VALUE
        else:
            raise AssertionError(f"unexpected env source {var}")
    assert not container.get("command"), "the image's ENTRYPOINT (felix-broker) must run"
    _check_flags_are_spelled_out(container["args"])
    config, _ = load_config(container["args"], env, lambda path: files[path])
    return config


def _check_flags_are_spelled_out(args: list[str]) -> None:
    """argparse accepts unambiguous prefixes (``--shutdown-grace``); manifests must not rely
    on that: every flag is one the broker's parser defines."""
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, arg


def _container_port(container: dict[str, Any], name: str) -> dict[str, Any]:
    (port,) = [p for p in container["ports"] if p["name"] == name]
    return dict(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_broker_flags_config_and_ports_agree(overlay: str) -> None:
    objects = _overlay(overlay)
    config = _effective_config(objects)
    container = _broker_container(objects)
    quic = _container_port(container, "quic")
    metrics = _container_port(container, "metrics")
    assert config.listen_address == ("0.0.0.0", quic["containerPort"])
    assert quic["protocol"] == "UDP"
    # Probes come from the kubelet, not from inside the pod: metrics must not be loopback.
    assert config.metrics_enabled
    assert config.metrics_address == ("0.0.0.0", metrics["containerPort"])
    assert config.server_id == POD_NAME
    assert config.auth_tokens == SECRET_VALUE and config.auth_enabled
    assert config.log_format == "json"
    for service_name in ("felix", "felix-headless"):
        service = _one(objects, "Service", service_name)
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["quic"]["targetPort"] == "quic"
        assert ports["quic"]["protocol"] == "UDP"
        assert service["spec"]["selector"].items() <= (
            _one(objects, "StatefulSet", "felix")["spec"]["template"]["metadata"]["labels"].items()
        )
    headless = _one(objects, "Service", "felix-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert _one(objects, "StatefulSet", "felix")["spec"]["serviceName"] == "felix-headless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_brokers_health_paths_on_its_metrics_port(overlay: str) -> None:
    container = _broker_container(_overlay(overlay))
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "metrics", probe
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/live", "livenessProbe": "/live", "readinessProbe": "/ready"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tls_data_dir_and_writable_paths_are_mounted(overlay: str) -> None:
    objects = _overlay(overlay)
    config = _effective_config(objects)
    container = _broker_container(objects)
    statefulset = _one(objects, "StatefulSet", "felix")
    pod = statefulset["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config.tls_cert is not None
    assert config.tls_key is not None
    for path, key in ((config.tls_cert, "tls.crt"), (config.tls_key, "tls.key")):
        directory, _, name = path.rpartition("/")
        assert name == key
        assert "secret" in volumes[mounts[directory]], path
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts[config.data_dir] in claims
    assert "emptyDir" in volumes[mounts["/tmp"]]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["serviceAccountName"] == _one(objects, "ServiceAccount", "felix")["metadata"]["name"]


_QUANTITY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * _QUANTITY.get(unit or "", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_limit_and_termination_grace_fit_the_broker_settings(overlay: str) -> None:
    objects = _overlay(overlay)
    config = _effective_config(objects)
    container = _broker_container(objects)
    pod = _one(objects, "StatefulSet", "felix")["spec"]["template"]["spec"]
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert config.broker.memory_limit_bytes < limit
    assert _bytes(container["resources"]["requests"]["memory"]) <= limit
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    # The runtime bounds its drain at shutdown_drain_s + 1 s (felix_runtime_*/app.py).
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + config.shutdown_drain_s + 1
    assert config.shutdown_grace_s <= config.shutdown_drain_s


def test_cluster_overlay_runs_three_brokers_and_a_consistent_etcd() -> None:
    objects = _overlay("cluster")
    assert _one(objects, "StatefulSet", "felix")["spec"]["replicas"] == 3
    assert _one(objects, "Service", "felix")["spec"]["sessionAffinity"] == "ClientIP"
    etcd = _one(objects, "StatefulSet", "felix-etcd")
    replicas = etcd["spec"]["replicas"]
    service = etcd["spec"]["serviceName"]
    assert _one(objects, "Service", service)["spec"]["clusterIP"] == "None"
    (container,) = etcd["spec"]["template"]["spec"]["containers"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    members = dict(m.split("=", 1) for m in args["initial-cluster"].split(","))
    assert members == {
        f"felix-etcd-{i}": f"http://felix-etcd-{i}.{service}:2380" for i in range(replicas)
    }
    assert args["initial-advertise-peer-urls"] == f"http://$(POD_NAME).{service}:2380"
    assert args["name"] == "$(POD_NAME)"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args["listen-peer-urls"].endswith(f":{ports['peer']}")
    assert args["listen-client-urls"].endswith(f":{ports['client']}")
    assert args["listen-metrics-urls"].endswith(f":{ports['metrics']}")
    mount = container["volumeMounts"][0]["mountPath"]
    assert args["data-dir"].startswith(mount + "/")
    pdb = _one(objects, "PodDisruptionBudget", "felix-etcd")
    assert pdb["spec"]["minAvailable"] == replicas // 2 + 1  # quorum survives a drain
    # The broker Services must not select etcd pods.
    etcd_labels = etcd["spec"]["template"]["metadata"]["labels"]
    selector = _one(objects, "Service", "felix")["spec"]["selector"]
    assert not selector.items() <= etcd_labels.items()


# ------------------------------------------------------------------------ Dockerfile


def _stages(text: str) -> list[list[tuple[str, str]]]:
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_non_root_and_runs_the_broker() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert len(stages) == 2
    final = stages[-1]
    final_text = " ".join(rest for _, rest in final)
    for tool in ("gcc", "build-essential", "python -m build", "pip install"):
        assert tool not in final_text, tool
    assert ("COPY", "--from=build /opt/felix /opt/felix") in final
    (user,) = [rest for instruction, rest in final if instruction == "USER"]
    uid = int(user.split(":")[0])
    assert uid != 0
    objects = _overlay("single")
    assert (
        _one(objects, "StatefulSet", "felix")["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ]
        == uid
    )
    (entrypoint,) = [yaml.safe_load(r) for i, r in final if i == "ENTRYPOINT"]
    assert entrypoint == ["felix-broker"]
    (cmd,) = [yaml.safe_load(r) for i, r in final if i == "CMD"]
    _check_flags_are_spelled_out(cmd)
    with pytest.raises(ConfigError, match="not a loopback address and authentication is off"):
        load_config(cmd, {}, lambda path: b"")  # the image needs auth (or an explicit opt-out)
    config, _ = load_config(cmd, {"FELIX_AUTH_TOKENS": "s=t:*"}, lambda path: b"")
    (expose,) = [shlex.split(r) for i, r in final if i == "EXPOSE"]
    assert f"{config.listen_address[1]}/udp" in expose
    assert f"{config.metrics_address[1]}/tcp" in expose
    assert config.metrics_address[0] == "0.0.0.0"
    (workdir,) = [r for i, r in final if i == "WORKDIR"]
    assert config.data_dir == workdir


def test_dockerfile_copies_every_package_the_wheel_needs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    build = _stages((ROOT / "Dockerfile").read_text())[0]
    copied = {rest.split()[0] for instruction, rest in build if instruction == "COPY"}
    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= {
        word for instruction, rest in build if instruction == "COPY" for word in rest.split()
    }


def test_exchange_overlay_maps_the_example_clients_projected_token() -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from felix_client import cli
    from felix_runtime.exchange import load_exchange_config

    objects = _overlay("exchange")
    config = _effective_config(objects)
    container = _broker_container(objects)
    pod = _one(objects, "StatefulSet", "felix")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_of(path: str) -> dict[str, Any]:
        return dict(volumes[mounts[path.rpartition("/")[0]]])

    assert config.auth_exchange is not None and config.auth_signing_key is not None
    assert "configMap" in volume_of(config.auth_exchange)
    assert "secret" in volume_of(config.auth_signing_key)  # keys come from Secrets
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": "k", "alg": "RS256", "use": "sig"}
    read: list[str] = []

    def read_file(path: str) -> bytes:
        read.append(path)
        return json.dumps({"keys": [jwk]}).encode()

    text = _one(objects, "ConfigMap", "felix-exchange")["data"]["exchange.toml"]
    exchange = load_exchange_config(text, read_file=read_file)
    assert [volume_of(path).get("secret") is not None for path in read] == [True]

    client = _one(objects, "Pod", "felix-client-example")
    spec = client["spec"]
    (source,) = [
        s["serviceAccountToken"]
        for v in spec["volumes"]
        if "projected" in v
        for s in v["projected"]["sources"]
    ]
    assert source["audience"] == exchange.issuers[0].audience
    rule = exchange.rules[0]
    assert (rule.namespace, rule.service_account) == (
        client["metadata"]["namespace"],
        spec["serviceAccountName"],
    )
    (main,) = spec["containers"]
    assert main["command"] == ["felix"]
    args = cli.build_parser().parse_args(main["args"])
    assert args.command == "login"
    mounted = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    directory, _, name = args.id_token.rpartition("/")
    assert (
        name == source["path"]
        and "projected" in {v["name"]: v for v in spec["volumes"]}[mounted[directory]]
    )
