"""Regenerate the vendored JSON Schemas that tests/deploy/test_manifests.py validates the deploy/ manifests against.

    python deploy/schemas/vendor_schemas.py kuberay PATH/TO/ray.io_rayjobs.yaml
    python deploy/schemas/vendor_schemas.py vertex  PATH/TO/aiplatform.v1.json

Sources (the tests cannot download anything, so the schemas live in the repository):

* ``ray.io_rayjobs.schema.json``: the ``openAPIV3Schema`` of the storage version (v1) of KubeRay's RayJob CRD,
  github.com/ray-project/kuberay ``helm-chart/kuberay-operator/crds/ray.io_rayjobs.yaml`` (the commit is recorded in
  the file's ``$comment``). Descriptions are dropped (size). Objects are made strict (``additionalProperties:
  false`` where the CRD lists properties and does not preserve unknown fields), as ``kubectl apply
  --validate=strict`` is: the API server would otherwise silently drop a misspelled field.
* ``vertex_customjob.schema.json``: the ``GoogleCloudAiplatformV1CustomJob`` schema and every schema it reaches, from
  the Vertex AI v1 discovery document that google-api-python-client ships
  (``googleapiclient/discovery_cache/documents/aiplatform.v1.json``), turned into JSON Schema: ``$ref`` by name →
  ``#/definitions/NAME``; a field whose description starts with "Required." is required; unknown fields refused;
  int64 fields take a JSON string or integer (proto3 JSON).

The Azure ML command job schema (``azureml_commandjob.schema.json``) is written by hand from the CLI v2 reference
(learn.microsoft.com/azure/machine-learning/reference-yaml-job-command; the published schema is
azuremlschemas.azureedge.net/latest/commandJob.schema.json, which cannot be fetched here): a subset covering the
keys the reference lists, unknown top-level keys refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def strict_crd(node: Any) -> Any:
    """The CRD schema without descriptions, objects closed to unknown fields."""
    if isinstance(node, list):
        return [strict_crd(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_crd(v) for k, v in node.items() if k != "description"}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def vendor_kuberay(crd_path: str, source: str = "") -> Path:
    crd = yaml.safe_load(Path(crd_path).read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = strict_crd(version["schema"]["openAPIV3Schema"])
    schema["$comment"] = (
        f"KubeRay RayJob CRD {version['name']} ({source or crd_path}), made strict by vendor_schemas.py"
    )
    out = HERE / "ray.io_rayjobs.schema.json"
    out.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
    return out


def discovery_to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One Discovery-format schema → JSON Schema (refs into ``#/definitions``)."""
    if "$ref" in node:
        return {"$ref": f"#/definitions/{node['$ref']}"}
    kind = node.get("type")
    out: dict[str, Any] = {}
    if kind == "object":
        out["type"] = "object"
        if "properties" in node:
            props = node["properties"]
            out["properties"] = {k: discovery_to_json_schema(v) for k, v in props.items()}
            out["additionalProperties"] = False
            required = [k for k, v in props.items() if v.get("description", "").startswith("Required.")]
            if required:
                out["required"] = sorted(required)
        elif "additionalProperties" in node:
            out["additionalProperties"] = discovery_to_json_schema(node["additionalProperties"])
    elif kind == "array":
        out = {"type": "array", "items": discovery_to_json_schema(node.get("items", {}))}
    elif kind == "string" and node.get("format") in ("int64", "uint64"):
        out = {"type": ["string", "integer"]}
    elif kind in ("string", "boolean", "integer", "number"):
        out = {"type": kind}
    if "enum" in node:
        out["enum"] = node["enum"]
    return out


def reachable(schemas: dict[str, Any], root: str) -> list[str]:
    seen, todo = [], [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo += [m for m in _refs(schemas[name]) if m not in seen]
    return sorted(seen)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def vendor_vertex(discovery_path: str) -> Path:
    doc = json.loads(Path(discovery_path).read_text())
    root = "GoogleCloudAiplatformV1CustomJob"
    names = reachable(doc["schemas"], root)
    schema = {
        "$comment": f"Vertex AI v1 CustomJob, discovery revision {doc['revision']}, converted by vendor_schemas.py",
        "$ref": f"#/definitions/{root}",
        "definitions": {n: discovery_to_json_schema(doc["schemas"][n]) for n in names},
    }
    out = HERE / "vertex_customjob.schema.json"
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    return out


if __name__ == "__main__":
    kind, path, *rest = sys.argv[1:]
    print({"kuberay": vendor_kuberay, "vertex": vendor_vertex}[kind](path, *rest))
