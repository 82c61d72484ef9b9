"""The on-demand alternative to chapter 02's vLLM Deployment: vLLM inside Ray Serve (Ray Serve's LLM API) on the gpu
pool. Rendered only when asked, valid against the project's RayService schema, the KubeRay CRD's CEL rules, the policy
and the prerequisites; the same model and served name as chapter 02; Ray's own config models accept its Serve config;
the scheduler places the head and the GPU worker and prices the alternative next to the plain Deployment; and the
gateway's switch changes exactly one thing, the reasoning route's api_base."""

from __future__ import annotations

import ast
import copy
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from helpers.config import Settings
from helpers.infra import aws, k8s, manifests, scheduling
from helpers.infra.manifests.cel import CRDS_DIR, cel_report
from helpers.infra.manifests.cli import run_checks
from helpers.layers import gateway
from helpers.layers.vllm import ray_llm
from helpers.target import Target
from tests.template_comments import uncommented_fields

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region="us-west-2")
NAME = "ray-llm-reasoning"


@pytest.fixture(scope="module", params=manifests.FLAVOURS)
def t(request: pytest.FixtureRequest) -> Target:
    return Target("eks", SETTINGS, flavour=request.param)


@pytest.fixture(scope="module")
def items() -> list[manifests.Manifest]:
    return ray_llm.render(Target("eks", SETTINGS, flavour="auto-mode"))


@pytest.fixture(scope="module")
def service(items: list[manifests.Manifest]) -> dict:
    return ray_llm.rayservice(items)


def cluster(service: dict) -> dict:
    return service["spec"]["rayClusterConfig"]


def gpu_group(service: dict) -> dict:
    return cluster(service)["workerGroupSpecs"][0]


# ---------------------------------------------------------------- rendered only when asked, and checked


def test_rendered_only_when_asked(t: Target) -> None:
    assert NAME not in {m.name for m in t.render("03-ray-serve")}, "on demand: never part of the chapter's default"
    asked = [m for m in t.render("03-ray-serve", include_on_demand=True) if m.name.startswith(NAME)]
    assert sorted(m.ref for m in asked) == [f"NetworkPolicy/llm-workshop/{NAME}", f"RayService/llm-workshop/{NAME}"]
    assert sorted(m.ref for m in ray_llm.render(t)) == sorted(m.ref for m in asked)


@pytest.mark.parametrize("target", manifests.TARGETS)
def test_schema_policy_cel_and_prerequisites_pass(t: Target, target: str) -> None:
    items = ray_llm.render(Target(target, SETTINGS, flavour=t.flavour))
    assert manifests.check(items) == []
    if CRDS_DIR.exists():
        report = cel_report(items)
        assert report.findings == [] and report.objects == 2, "the RayService and the RayCluster KubeRay makes of it"
    # prerequisites need a flavour's whole set: every chapter, with this alternative in it
    everything = [m.doc for m in t.render_all(include_on_demand=True)]
    suite = run_checks(everything, t.flavour, t.flavour, SETTINGS.aws_region, settings=SETTINGS)
    assert suite.total == 0, {k: [f.message for f in v] for k, v in suite.findings.items() if v}


def test_every_template_field_is_commented() -> None:
    assert uncommented_fields(ROOT / "manifests" / "03-ray-serve" / "on-demand", "ray-llm*.j2") == []


def test_the_schema_refuses_what_the_crd_would_drop(service: dict) -> None:
    broken = copy.deepcopy(service)
    gpu_group(broken)["resourcez"] = {"accelerator_type:L4": "1"}
    assert any("resourcez" in f.message for f in manifests.validate([broken]))
    broken = copy.deepcopy(service)
    gpu_group(broken)["resources"] = {"accelerator_type:L4": 1}  # the CRD's map holds strings
    assert manifests.validate([broken])
    broken = copy.deepcopy(service)
    gpu_group(broken)["template"]["spec"]["tolerations"] = []
    assert "accelerator-toleration" in {f.rule for f in manifests.policy([broken])}


# ---------------------------------------------------------------- the same model, server and image rules


def test_same_model_and_engine_settings_as_chapter_02(items: list[manifests.Manifest]) -> None:
    plain = manifests.chapter_parameters("02-vllm")["servers"]["reasoning"]
    config = ray_llm.llm_config(items)
    assert config["model_loading_config"] == {"model_id": plain["served_model_name"], "model_source": plain["model"]}
    assert config["model_loading_config"]["model_id"] == Settings(_env_file=None).served_chat_model
    engine = config["engine_kwargs"]
    assert (engine["tensor_parallel_size"], engine["max_model_len"], engine["gpu_memory_utilization"],
            engine["max_num_seqs"], engine["dtype"]) == (plain["tensor_parallel"], plain["max_model_len"],
                                                         plain["gpu_memory_utilization"], plain["max_num_seqs"],
                                                         plain["dtype"])
    flags = {a["flag"] for a in plain["extra_args"]}
    assert "--enable-auto-tool-choice" in flags and engine["enable_auto_tool_choice"] is True
    assert f"--tool-call-parser={engine['tool_call_parser']}" in flags
    assert f"--reasoning-parser={engine['reasoning_parser']}" in flags
    assert not {"model", "served_model_name"} & set(engine), "Ray Serve LLM refuses them in engine_kwargs"
    params = ray_llm.parameters()
    assert params["hf_token_secret"] == manifests.chapter_parameters("02-vllm")["hf_token_secret"]
    assert params["clients"] == manifests.chapter_parameters("02-vllm")["clients"]


def test_one_ray_and_one_python_everywhere(service: dict) -> None:
    import ray

    params = ray_llm.parameters()
    image = params["image"]
    repository, tag = image.split(":")
    ray_part, python_part, cuda_part = tag.split("-")
    assert repository == "rayproject/ray-llm" and python_part == "py312" and cuda_part == "cu130"
    assert ray_part == params["ray_version"] == manifests.chapter_parameters("03-ray-serve")["ray_version"]
    assert ray_part == ray.__version__ == cluster(service)["rayVersion"], "rayVersion = the Ray in the image = local"
    head = cluster(service)["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    worker = gpu_group(service)["template"]["spec"]["containers"][0]["image"]
    assert head == worker == image, "head and workers: the same Ray AND the same Python minor"
    cpu_image = manifests.chapter_parameters("03-ray-serve")["base_image"]
    assert "py311" in cpu_image and python_part not in cpu_image, "so never a worker group of chapter 03's cluster"


# ---------------------------------------------------------------- Ray's own models accept the Serve config


def _fields(path: Path, class_name: str) -> set[str]:
    """The annotated fields of a pydantic class, read from Ray's source (LLMConfig cannot be imported without vLLM)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            and not n.target.id.startswith("_")}


def test_ray_accepts_the_serve_config(items: list[manifests.Manifest]) -> None:
    import ray
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema
    from ray.util import accelerators

    config = ray_llm.serve_config(items)
    ServeDeploySchema.model_validate(config)  # what KubeRay's submission is checked against
    app = config["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app" and app["route_prefix"] == "/"
    serve_llm = Path(ray.__file__).parent / "llm" / "_internal" / "serve"
    assert set(app["args"]) <= _fields(serve_llm / "core" / "ingress" / "builder.py", "LLMServingArgs")
    llm = app["args"]["llm_configs"][0]
    configs = serve_llm / "core" / "configs" / "llm_config.py"
    assert set(llm) <= _fields(configs, "LLMConfig")
    assert set(llm["model_loading_config"]) <= _fields(configs, "ModelLoadingConfig")
    assert llm["accelerator_type"] in {v for k, v in vars(accelerators).items() if k.isupper() and isinstance(v, str)}
    group = llm["placement_group_config"]
    assert group["strategy"] in ("PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD")
    deployment = llm["deployment_config"]
    assert set(deployment) <= set(DeploymentConfig.model_fields)
    scaling = AutoscalingConfig.model_validate(deployment["autoscaling_config"])
    assert scaling.min_replicas >= 1, "a cold 4-GPU replica takes many minutes: never scale to zero"


def test_placement_group_fills_one_gpu_worker(service: dict, items: list[manifests.Manifest]) -> None:
    llm = ray_llm.llm_config(items)
    tp = llm["engine_kwargs"]["tensor_parallel_size"]
    bundle = llm["placement_group_config"]["bundle_per_worker"]
    start = gpu_group(service)["rayStartParams"]
    gpus = gpu_group(service)["template"]["spec"]["containers"][0]["resources"]
    assert bundle["GPU"] * tp == int(start["num-gpus"]) == gpus["requests"]["nvidia.com/gpu"] \
        == gpus["limits"]["nvidia.com/gpu"], "one replica's bundles exactly fill one worker pod"
    assert bundle["CPU"] * tp <= int(start["num-cpus"]) == int(gpus["requests"]["cpu"])
    assert llm["placement_group_config"]["strategy"] == "STRICT_PACK", "tensor parallel stays inside one node"
    scaling = llm["deployment_config"]["autoscaling_config"]
    group = gpu_group(service)
    assert (group["minReplicas"], group["maxReplicas"]) == (scaling["min_replicas"], scaling["max_replicas"])
    assert group["resources"] == {f"accelerator_type:{llm['accelerator_type']}": "1"}, \
        "the Ray autoscaler infers only CPU/GPU/memory: the group must advertise the accelerator itself"


def test_gpu_worker_lands_on_the_accelerator_it_names(t: Target) -> None:
    service = ray_llm.rayservice(ray_llm.render(t))
    spec = gpu_group(service)["template"]["spec"]
    params = ray_llm.parameters()
    family_key = manifests.instance_label("instance-family", t.flavour)
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "gpu", "kubernetes.io/arch": "amd64",
                                    family_key: params["accelerator"]["instance_family"]}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    family = [i for i in aws.load_instance_types().values() if i.family == params["accelerator"]["instance_family"]]
    assert family and {i.gpu_name for i in family if i.gpu_count} == {params["accelerator"]["type"].lower()}
    pool = next(p for p in scheduling.node_pools(t) if p.name == "gpu")
    assert gpu_group(service)["maxReplicas"] * params["worker"]["gpus"] <= float(pool.limits["nvidia.com/gpu"])


def test_the_serve_service_the_gateway_will_name(service: dict) -> None:
    assert service["spec"]["serveService"]["metadata"]["name"] == ray_llm.serve_service() == f"{NAME}-serve-svc"
    assert service["spec"]["serveService"]["spec"]["ports"] == [{"name": "serve", "port": 8000, "targetPort": 8000}]
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True


# ---------------------------------------------------------------- who may reach it, who scrapes it


def test_network_policy_is_the_only_lock(items: list[manifests.Manifest]) -> None:
    policy = next(m.doc for m in items if m.kind == "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": NAME}}
    sources = [rule["from"][0] for rule in policy["ingress"]]
    gateway_pods = next(m.doc for m in manifests.render_chapter("04-gateway", "eks", settings=SETTINGS)
                        if m.kind == "Deployment" and m.name == "litellm")["spec"]["template"]["metadata"]["labels"]
    assert k8s.label_selector_matches(sources[0]["podSelector"], gateway_pods), "the policy selects real pods"
    assert policy["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert sources[1] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}
    assert "ports" not in policy["ingress"][1], "Ray's workers pick ports at run time"
    kuberay = next(r.namespace for r in k8s.operator_releases("auto-mode") if r.name == "kuberay-operator")
    namespaces = [s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources[2:]]
    assert namespaces == [kuberay, k8s.MONITORING_NAMESPACE]


def test_prometheus_scrapes_the_ray_pods(items: list[manifests.Manifest]) -> None:
    rows = k8s.monitor_coverage(items, k8s.monitors("llm-workshop"))
    assert {r["what"]: r["scraped by"] for r in rows} == {"Ray head": "ray", "Ray worker gpu": "ray"}


# ---------------------------------------------------------------- the scheduler and the bill


def test_scheduler_places_the_head_and_the_gpu_worker(t: Target) -> None:
    workloads = {w.name: w for w in scheduling.workloads_from_manifests(ray_llm.render(t))}
    assert set(workloads) == {f"{NAME}-head", f"{NAME}-worker-gpu"}
    worker = workloads[f"{NAME}-worker-gpu"]
    assert (worker.gpus, worker.replicas, worker.max_replicas) == (4, 1, 2)
    placed = {p.workload.name: p for p in scheduling.explain(workloads.values(), scheduling.node_pools(t))}
    assert placed[f"{NAME}-head"].pool == "x86", "amd64-only image: the tainted x86 pool, which it tolerates"
    assert placed[f"{NAME}-worker-gpu"].pool == "gpu"
    gpu = next(v for v in placed[f"{NAME}-worker-gpu"].verdicts if v.pool == "gpu")
    assert gpu.cheapest and all(name.startswith("g6.") for name, _ in gpu.cheapest), "L4 only: the g6 family"


def test_cost_next_to_the_plain_deployment(t: Target) -> None:
    rows = {r["serving"]: r for r in ray_llm.cost_comparison(t)}
    plain, ray = rows["vLLM Deployment (chapter 02)"], rows["vLLM in Ray Serve (RayService)"]
    assert plain["unplaced"] == ray["unplaced"] == "none"
    assert plain["nodes (min)"] == "gpu: g6.12xlarge"
    assert ray["nodes (min)"].startswith("x86: ") and ray["nodes (min)"].endswith("gpu: g6.12xlarge")
    extra = Decimal(ray["$/h at min"]) - Decimal(plain["$/h at min"])
    assert Decimal("0.05") < extra < Decimal("0.50"), "the head's CPU node (and its root volume), no more"
    assert Decimal(ray["$/h at max"]) > 2 * Decimal(plain["$/h at max"]) - 1, "max: a second 4-GPU node"


# ---------------------------------------------------------------- the gateway: one line


def test_the_gateway_switch_changes_exactly_the_api_base() -> None:
    eks = Target("eks", SETTINGS)
    before = gateway.gateway_config(eks)
    after = gateway.gateway_config(eks, **ray_llm.gateway_overrides())
    assert gateway.config_without_endpoints(before) == gateway.config_without_endpoints(after)
    changed = [(a["model_name"], a["litellm_params"]["api_base"], b["litellm_params"]["api_base"])
               for a, b in zip(before["model_list"], after["model_list"]) if a != b]
    assert changed == [("reasoning", "http://vllm-reasoning.llm-workshop.svc:8000/v1",
                        f"http://{NAME}-serve-svc.llm-workshop.svc:8000/v1")]
    assert {k: v for k, v in before.items() if k != "model_list"} == {k: v for k, v in after.items()
                                                                       if k != "model_list"}
    # the whole chapter: only the ConfigMap's config.yaml differs, in that one line
    plain = {m.ref: m.doc for m in gateway.render(eks)}
    switched = {m.ref: m.doc for m in gateway.render(eks, overrides=ray_llm.gateway_overrides())}
    assert plain.keys() == switched.keys()
    differ = [ref for ref in plain if plain[ref] != switched[ref]]
    assert differ == ["ConfigMap/llm-workshop/litellm-config"]
    lines = [(a, b) for a, b in zip(plain[differ[0]]["data"]["config.yaml"].splitlines(),
                                    switched[differ[0]]["data"]["config.yaml"].splitlines()) if a != b]
    assert len(lines) == 1 and "api_base:" in lines[0][0] and f"{NAME}-serve-svc" in lines[0][1]


def test_locally_nothing_changes() -> None:
    local = Target("local", SETTINGS.model_copy(update={"target": "local"}))
    assert gateway.config_text(local, tracing=False) == gateway.config_text(local, tracing=False,
                                                                            **ray_llm.gateway_overrides())


# ---------------------------------------------------------------- the trade-offs, as data


def test_tradeoffs_table_covers_what_the_notebook_compares() -> None:
    rows = ray_llm.tradeoffs_table()
    aspects = [r["aspect"] for r in rows]
    assert {"autoscaling", "multi-model", "operational cost", "cold start", "observability"} <= set(aspects)
    assert all(len(r) == 3 and all(str(v).strip() for v in r.values()) for r in rows)
    data = yaml.safe_load(ray_llm.TRADEOFFS.read_text())
    assert set(data["columns"]) == {"plain", "ray"}
