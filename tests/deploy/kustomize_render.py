"""A small kustomize renderer for ``deploy/kubernetes``: the subset of kustomize the Felix
manifests use, so the tests can render every overlay without the ``kustomize`` binary.

Supported kustomization keys: ``resources`` (files, or directories with a
kustomization.yaml), ``namespace`` (set on every namespaced object), ``replicas``
(``name`` / ``count``) and ``patches`` given by ``path`` (strategic-merge patches whose
target is the object of the same kind and name). Strategic merge here: mappings merge key
by key, lists of mappings that all carry ``name`` merge item by item on ``name`` (items
new to the list come first, in the patch's order, as kustomize puts them), other lists
and scalars are replaced. Any other key, or a patch directive (``$patch``), raises
:class:`UnsupportedKustomization`, so a manifest cannot silently outgrow this renderer;
when ``kubectl`` is installed the tests compare this rendering with ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


class UnsupportedKustomization(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Manifest]:
    """The objects ``kustomize build directory`` would emit (in resource order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: unsupported keys {sorted(unknown)}")
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: patch {patch} (only path: is)")
        for doc in load_documents(directory / patch["path"]):
            target = _find(objects, doc["kind"], doc["metadata"]["name"])
            target.update(merge(target, doc))
    for replicas in kustomization.get("replicas", []):
        _find(objects, "StatefulSet", replicas["name"], "Deployment")["spec"]["replicas"] = (
            replicas["count"]
        )
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _find(objects: list[Manifest], kind: str, name: str, *other_kinds: str) -> Manifest:
    kinds = {kind, *other_kinds}
    found = [o for o in objects if o["kind"] in kinds and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise UnsupportedKustomization(f"{len(found)} objects match {kind}/{name}")
    return found[0]


def merge(base: Any, patch: Any) -> Any:
    """``patch`` applied to ``base`` as a strategic-merge patch (see the module docstring)."""
    if isinstance(patch, dict) and "$patch" in patch:
        raise UnsupportedKustomization("$patch directives are not supported")
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if _named_list(base) and _named_list(patch):
        out_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(out_list)}
        added = []
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = merge(out_list[index[item["name"]]], item)
            else:
                added.append(copy.deepcopy(item))
        return added + out_list
    return copy.deepcopy(patch)


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and "name" in item for item in value)
    )
