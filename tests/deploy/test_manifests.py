"""The deployment files: every manifest against its schema, every container command parsed by our CLI, the
Dockerfiles' install steps against pyproject.toml.

Schemas (offline; deploy/schemas/vendor_schemas.py says where each comes from and regenerates them):
KubeRay's RayJob CRD (strict), Kubernetes' own object schemas (the kubernetes-validate package) for the pod templates
and the PVC, the SageMaker CreateTrainingJob input shape (botocore's service model, the check boto3 runs before
sending), the Vertex AI CustomJob (from the v1 discovery document), the Azure ML command job (a hand-written subset of
the published schema; azure-ai-ml's own loader as well when it is installed). Each validator is also shown a broken
copy of its manifest, so a validator that accepts anything fails here.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rewardloop.cli import COMMANDS, build_parser, command_overrides
from rewardloop.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY, SCHEMAS, DOCKER = ROOT / "deploy", ROOT / "deploy" / "schemas", ROOT / "docker"
IMAGE_WORKDIR = "/app"  # WORKDIR of both images; /app/configs is the repository's configs/


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def errors(validator_schema: dict[str, Any], doc: Any) -> list[str]:
    validator = jsonschema.validators.validator_for(validator_schema)(validator_schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300] for e in validator.iter_errors(doc)]


RAYJOB = load(DEPLOY / "kuberay" / "rayjob.yaml")
SAGEMAKER = load(DEPLOY / "sagemaker" / "training_job.json")
VERTEX = load(DEPLOY / "vertex" / "customjob.json")
AZUREML = load(DEPLOY / "azureml" / "job.yaml")


def pod_templates(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]["template"]}
    return groups | {g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}


# -- schemas ------------------------------------------------------------------------------------------------------
def test_rayjob_matches_the_kuberay_crd_schema():
    assert RAYJOB["apiVersion"] == "ray.io/v1" and RAYJOB["kind"] == "RayJob"
    assert errors(schema("ray.io_rayjobs.schema.json"), RAYJOB) == []


def _misspell_container_field(doc):
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagee"] = "x"


def _replicas_as_text(doc):
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"


def _container_without_name(doc):
    del doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["name"]


@pytest.mark.parametrize("breaks", [_misspell_container_field, _replicas_as_text, _container_without_name])
def test_the_crd_schema_refuses_a_broken_rayjob(breaks):
    broken = copy.deepcopy(RAYJOB)
    breaks(broken)
    assert errors(schema("ray.io_rayjobs.schema.json"), broken)


def test_pod_templates_and_the_pvc_are_valid_kubernetes_objects():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (Kubernetes' schemas)")
    version = kv.latest_version()
    for name, template in pod_templates(RAYJOB).items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        kv.validate(pod_template, version, strict=True)
    kv.validate(load(DEPLOY / "kuberay" / "pvc.yaml"), version, strict=True)
    broken = copy.deepcopy(pod_templates(RAYJOB)["gpu"])
    broken["spec"]["tolerations"][0]["efect"] = "NoSchedule"
    with pytest.raises(kv.ValidationError):
        kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": broken}, version, strict=True)  # fmt: skip


def test_rayjob_images_and_resources():
    templates = pod_templates(RAYJOB)
    image = {name: t["spec"]["containers"][0]["image"] for name, t in templates.items()}
    assert image == {
        "head": "REGISTRY/rewardloop:cpu",
        "cpu": "REGISTRY/rewardloop:cpu",
        "gpu": "REGISTRY/rewardloop:cuda",
    }
    gpu = templates["gpu"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    mounts = templates["head"]["spec"]["containers"][0]["volumeMounts"]
    claim = templates["head"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == load(DEPLOY / "kuberay" / "pvc.yaml")["metadata"]["name"] and mounts[0]["mountPath"] == "/data"


def sagemaker_input_shape():
    botocore = pytest.importorskip("botocore", reason="pip install botocore (the SageMaker service model)")
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    model = ServiceModel(Loader().load_service_model("sagemaker", "service-2"))
    return botocore, model.operation_model("CreateTrainingJob").input_shape


def sagemaker_errors(request: dict[str, Any]) -> str:
    _, shape = sagemaker_input_shape()
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(request, shape)
    return report.generate_report() if report.has_errors() else ""


def test_sagemaker_training_job_matches_create_training_job():
    assert sagemaker_errors(SAGEMAKER) == ""
    broken = copy.deepcopy(SAGEMAKER)
    broken["ResourceConfig"]["InstanceCount"] = "one"
    broken["AlgorithmSpecification"]["Entrypoint"] = ["rewardloop"]
    report = sagemaker_errors(broken)
    assert "InstanceCount" in report and "Entrypoint" in report


def test_vertex_custom_job_matches_the_customjob_resource():
    assert errors(schema("vertex_customjob.schema.json"), VERTEX) == []
    broken = copy.deepcopy(VERTEX)
    broken["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["image"] = broken["jobSpec"]["workerPoolSpecs"][0]["containerSpec"].pop("imageUri")  # fmt: skip
    found = " ".join(errors(schema("vertex_customjob.schema.json"), broken))
    assert "imageUri" in found and "'image' was unexpected" in found


def test_azureml_job_matches_the_command_job_schema():
    assert errors(schema("azureml_commandjob.schema.json"), AZUREML) == []
    broken = copy.deepcopy(AZUREML) | {"computee": "azureml:cpu-cluster"}
    broken["inputs"]["sft_model"]["mode"] = "rw_mount"  # outputs only
    found = " ".join(errors(schema("azureml_commandjob.schema.json"), broken))
    assert "computee" in found and "rw_mount" in found


def test_azureml_job_loads_with_azure_ai_ml():
    ml = pytest.importorskip("azure.ai.ml", reason="pip install azure-ai-ml (Azure's own job loader)")
    job = ml.load_job(DEPLOY / "azureml" / "job.yaml")
    assert job.command == AZUREML["command"] and job.environment.image == AZUREML["environment"]["image"]


# -- the container command lines ------------------------------------------------------------------------------------
def command_lines() -> dict[str, list[str]]:
    """Each manifest's container command as argv (Azure ML's ${{inputs.X}} / ${{outputs.X}} as mount paths)."""
    algo = SAGEMAKER["AlgorithmSpecification"]
    container = VERTEX["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    azure = re.sub(r"\$\{\{(inputs|outputs)\.(\w+)\}\}", r"/mnt/azureml/\1/\2", AZUREML["command"])
    return {
        "kuberay": shlex.split(RAYJOB["spec"]["entrypoint"]),
        "sagemaker": algo["ContainerEntrypoint"] + algo["ContainerArguments"],
        "vertex": container["command"] + container["args"],
        "azureml": shlex.split(azure),
    }


@pytest.mark.parametrize("platform", ["kuberay", "sagemaker", "vertex", "azureml"])
def test_each_manifest_runs_a_rewardloop_command_our_cli_accepts(platform):
    argv = command_lines()[platform]
    assert argv[0] == "rewardloop"
    args = build_parser().parse_args(argv[1:])
    assert args.command in COMMANDS, args.command
    config = Path(args.config)
    assert config.is_relative_to(IMAGE_WORKDIR), f"{platform}: use an absolute /app/configs/... path (cwd varies)"
    local = ROOT / config.relative_to(IMAGE_WORKDIR)
    assert local.exists(), f"{platform}: {config} is not in the image (no {local})"
    cmd = COMMANDS[args.command]
    cfg = load_config(
        getattr(__import__(cmd.module, fromlist=[cmd.config]), cmd.config),
        local,
        list(cmd.defaults) + command_overrides(cmd, args),
    )
    assert cfg.run.progress is False  # logs, not a progress bar, in a job's log stream
    if platform == "kuberay":
        assert (cfg.run.backend, cfg.run.ray_address) == ("ray", "auto")


# -- the Dockerfiles ------------------------------------------------------------------------------------------------
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def arg_default(dockerfile: Path, name: str) -> str:
    return next(a.split("=", 1)[1] for i, a in instructions(dockerfile) if i == "ARG" and a.startswith(f"{name}="))


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_installs_existing_extras_and_runs_rewardloop(name):
    dockerfile = DOCKER / name
    steps = instructions(dockerfile)
    runs = " ".join(a for i, a in steps if i == "RUN")
    extras = re.findall(r"pip install \"?\.\[([\w,-]+)\]", runs)
    assert extras, f"{name}: no `pip install .[extras]` step"
    known = set(PYPROJECT["project"]["optional-dependencies"])
    for group in extras:
        assert set(group.split(",")) <= known, f"{name}: extras {group} not all in pyproject ({sorted(known)})"
    assert "rewardloop" in PYPROJECT["project"]["scripts"]
    assert ("ENTRYPOINT", '["rewardloop"]') in steps
    assert ("WORKDIR", IMAGE_WORKDIR) in steps
    copies = [a.split() for i, a in steps if i == "COPY" and not a.startswith("--from")]
    for *sources, _ in copies:
        assert all((ROOT / s).exists() for s in sources), f"{name}: COPY {sources}: not in the repository"
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {s for *sources, _ in copies for s in sources}, "a COPY source is in .dockerignore"
    assert ["configs", "./configs"] in copies  # the manifests' --config /app/configs/...
    makefile_torch = re.search(r"TORCH \?= torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert arg_default(dockerfile, "TORCH_VERSION") == makefile_torch
    assert arg_default(dockerfile, "RAY_VERSION") == RAYJOB["spec"]["rayClusterSpec"]["rayVersion"]


def test_base_images():
    cpu = [a for i, a in instructions(DOCKER / "Dockerfile.cpu") if i == "FROM"]
    cuda = [a for i, a in instructions(DOCKER / "Dockerfile.cuda") if i == "FROM"]
    assert cpu == ["python:3.11-slim"]
    assert len(cuda) == 1 and re.fullmatch(r"nvidia/cuda:[\d.]+-cudnn-runtime-ubuntu[\d.]+", cuda[0])
    assert "cpu" in arg_default(DOCKER / "Dockerfile.cpu", "TORCH_VERSION") or "whl/cpu" in (DOCKER / "Dockerfile.cpu").read_text()  # fmt: skip
    assert re.search(r"whl/cu\d+", arg_default(DOCKER / "Dockerfile.cuda", "TORCH_INDEX"))
