"""The Target object: the notebook's TARGET reaches every helper, and no helper can fall back to another target.

Also the Target's own resolvers (endpoints, cluster, apply, vector store) and the notebook utilities of
helpers.notebook (the `%%on` cell magic, self_check, table). Nothing here starts a service.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import SecretStr

import helpers
from helpers import chapters, config
from helpers.infra import aws, k8s, scheduling, teardown
from helpers.infra.manifests import FLAVOURS, TARGETS, Manifest
from helpers.layers import gateway
from helpers.layers.observability import tracing
from helpers.local import stack
from helpers.notebook import NEEDS, register_magics, run_cell_body, runs_on, self_check, table
from helpers.target import Connection, Endpoint, Target, TargetError
from tests.local_http import Request, serve

ROOT = Path(__file__).resolve().parents[1]
OPPOSITE = {"local": "eks", "eks": "local"}
OTHER_FLAVOUR = {"auto-mode": "karpenter", "karpenter": "auto-mode"}
INSTANCE_LABEL_PREFIX = {"auto-mode": "eks.amazonaws.com", "karpenter": "karpenter.k8s.aws"}


def eks_settings(**values: Any) -> config.Settings:
    """Settings that read neither .env nor (for the fields given) the environment."""
    return config.Settings(_env_file=None, **values)


def gateway_config_text(items: list[Manifest]) -> str:
    """The LiteLLM config.yaml that chapter 04's ConfigMap carries."""
    configmap = next(m for m in items if m.kind == "ConfigMap" and m.chapter == "04-gateway")
    return configmap.doc["data"]["config.yaml"]


# ---------------------------------------------------------------- the TARGET reaches every helper


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", TARGETS)
def test_render_price_and_plan_follow_the_target_not_the_environment(
    name: str, flavour: str, isolated_settings: config.Settings, no_aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """WORKSHOP_TARGET and WORKSHOP_COMPUTE_MODE say the opposite of the Target: every output follows the Target."""
    monkeypatch.setenv("WORKSHOP_TARGET", OPPOSITE[name])
    monkeypatch.setenv("WORKSHOP_COMPUTE_MODE", OTHER_FLAVOUR[flavour])
    settings = config.reload_settings()
    assert (settings.target, settings.compute_mode) == (OPPOSITE[name], OTHER_FLAVOUR[flavour])
    t = Target(name, settings, flavour=flavour)

    # render: the templates see the target's name and endpoints
    items = t.render_all()
    assert f"# LiteLLM gateway configuration (target: {name})" in gateway_config_text(items)
    text = gateway.config_text(t, tracing=False)
    assert f"(target: {name})" in text and f"(target: {OPPOSITE[name]})" not in text
    api_base = {m["model_name"]: m["litellm_params"]["api_base"]
                for m in gateway.gateway_config(t, tracing=False)["model_list"]}
    assert api_base["reasoning"] == t.chat.base_url and api_base["embedding"] == t.embeddings.base_url
    assert all((".svc:" in url) == (name == "eks") for url in api_base.values()), api_base
    assert ("database_url" in gateway.gateway_config(t, tracing=False)["general_settings"]) == (name == "eks")
    assert tracing.gateway_callback(t, env={}) == ("langfuse_otel" if name == "eks" else "otel")

    # price: the node pools of the target's flavour, every workload placed; the price table refreshed for eks only
    pools = scheduling.node_pools(t)
    labels = {r.key.split("/")[0] for p in pools for r in p.requirements if r.attribute.startswith("instance-")}
    assert labels == {INSTANCE_LABEL_PREFIX[flavour]}
    report = scheduling.platform_cost(scheduling.platform_workloads(items), pools)
    assert report.total > 0 and report.unplaced == ()
    csv = tmp_path / "prices.csv"
    with pytest.raises(aws.AwsUnavailable) as refused:
        aws.refresh_price_table(t, ["c7g.large"], csv)
    if name == "local":
        assert "only for the eks target" in refused.value.message
    else:  # past the target's gate: it stops only because this test has no AWS credentials
        assert "only for the eks target" not in refused.value.message and "credentials" in str(refused.value)
    assert not csv.exists()

    # plan: eks plans the target's flavour (its node classes and operators), local has no cluster to plan
    if name == "eks":
        full = teardown.full_plan(t)
        kinds = teardown.planned_kinds(full)
        node_class = {"auto-mode": "NodeClass", "karpenter": "EC2NodeClass"}
        assert node_class[flavour] in kinds and node_class[OTHER_FLAVOUR[flavour]] not in kinds
        operators = {s.name for s in full.steps if s.kind == "OperatorRelease"}
        # the karpenter flavour's own operators: the device plugin is planned; Karpenter and the AWS controllers
        # live in kube-system, which teardown never touches (they go with the cluster)
        assert ("nvidia-device-plugin" in operators) == (flavour == "karpenter") and "karpenter" not in operators
        k8s_refs = {s.ref for s in full.steps if s.api_version not in (teardown.HELM_API, teardown.AWS_API)}
        # every rendered object but the protected ones (auto-mode's kube-system network-policy switch)
        release_namespaces = {f"Namespace/{e['metadata']['name']}" for e in teardown.helm_entries(t.flavour, t.settings)
                              if e["kind"] == "Namespace" and not teardown.is_protected(e)}
        assert k8s_refs == {m.ref for m in t.render_all(include_on_demand=True)
                            if not teardown.is_protected(m.doc)} | release_namespaces
    else:
        assert not t.cluster and not t.aws
        with pytest.raises(TargetError):
            t.apply(items)


def _helpers_modules() -> Iterator[Any]:
    for info in pkgutil.walk_packages(helpers.__path__, "helpers."):
        if not info.name.endswith("__main__"):  # a package's __main__ runs its command line when imported
            yield importlib.import_module(info.name)


def _functions(module: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every function and method defined in a module (dataclass-generated __init__ included)."""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                member = member.fget if isinstance(member, property) else getattr(member, "func", member)
                member = getattr(member, "__func__", member)  # classmethod, staticmethod
                if inspect.isfunction(member):
                    yield f"{module.__name__}.{obj.__name__}.{attr}", member


def test_no_helper_has_a_default_target() -> None:
    found = []
    count = 0
    for module in _helpers_modules():
        for qualified, function in _functions(module):
            count += 1
            for parameter in inspect.signature(function).parameters.values():
                if parameter.name not in ("target", "t") or parameter.default is inspect.Parameter.empty:
                    continue
                found.append(f"{qualified}({parameter.name}={parameter.default!r})")
    assert count > 500, "the walk found the library's functions"
    assert found == []


def _python_files() -> list[Path]:
    return sorted(p for folder in ("helpers", "services") for p in (ROOT / folder).rglob("*.py"))


def test_no_nested_function_has_a_default_target() -> None:
    """The same rule for what inspect cannot reach (functions inside functions, lambdas), read from the source."""
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            defaults = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
            defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}
            for name, default in defaults.items():
                if name in ("target", "t"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}={ast.unparse(default)}")
    assert found == []


SETTINGS_FACTORIES = {"get_settings", "reload_settings", "Settings"}
ALLOWED_TO_READ_THE_TARGET = {"helpers/config.py", "helpers/target.py"}


def settings_target_reads(source: str) -> list[str]:
    """Where a source reads the target of a Settings: `settings.target`, `get_settings().target`, `t.settings.target`,
    a name bound to a Settings (`s = get_settings()`, `def f(cfg: Settings)`) then `.target`, getattr(..., "target"),
    or the WORKSHOP_TARGET variable itself."""
    tree = ast.parse(source)
    bound = {"settings"}

    def is_settings(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in bound or node.id.endswith("settings")
        if isinstance(node, ast.Attribute):
            return node.attr in ("settings", "_settings")
        if isinstance(node, ast.Call):
            func = node.func
            return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) in SETTINGS_FACTORIES
        return False

    for _ in range(2):  # names bound from other bound names
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and is_settings(node.value):
                bound |= {n.id for n in node.targets if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
                if "Settings" in ast.unparse(node.annotation):
                    bound.add(node.arg if isinstance(node, ast.arg) else ast.unparse(node.target))
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "target" and is_settings(node.value):
            reads.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and is_settings(node.args[0])
              and isinstance(node.args[1], ast.Constant) and node.args[1].value == "target"):
            reads.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and node.value == "WORKSHOP_TARGET":
            reads.append(f"{node.lineno}: 'WORKSHOP_TARGET'")
    return reads


def test_the_check_for_settings_target_finds_every_form() -> None:
    source = (
        "from helpers.config import Settings, get_settings\n"
        "def a(settings):\n    return settings.target\n"
        "def b():\n    return get_settings().target\n"
        "def c(t):\n    return t.settings.target\n"
        "def d(cfg: Settings):\n    return cfg.target\n"
        "def e():\n    s = get_settings()\n    s2 = s\n    return s2.target\n"
        "def f(settings):\n    return getattr(settings, 'target')\n"
        "def g():\n    import os\n    return os.environ['WORKSHOP_TARGET']\n"
        "def fine(t, args):\n    return t.name, args.target, t.is_eks\n"
    )
    assert [line.split(":")[0] for line in settings_target_reads(source)] == ["3", "5", "7", "9", "13", "15", "18"]


def test_only_config_and_target_read_the_target_of_the_settings() -> None:
    found = {}
    for path in _python_files():
        relative = str(path.relative_to(ROOT))
        if relative not in ALLOWED_TO_READ_THE_TARGET and (reads := settings_target_reads(path.read_text())):
            found[relative] = reads
    assert found == {}
    assert settings_target_reads((ROOT / "helpers" / "target.py").read_text()), "the one reader is seen"


# ---------------------------------------------------------------- the Target's own resolvers


def test_an_unknown_target_or_flavour_is_refused_with_a_fix() -> None:
    with pytest.raises(TargetError, match="TARGET must be 'local' or 'eks', not 'gke'") as raised:
        Target("gke", eks_settings())
    assert 'TARGET = "local"' in raised.value.fix and 'TARGET = "eks"' in raised.value.fix
    assert "Fix: " in str(raised.value)
    with pytest.raises(TargetError, match="flavour") as raised:
        Target("eks", eks_settings(), flavour="fargate")
    assert "auto-mode" in raised.value.fix
    assert Target("eks", eks_settings(compute_mode="karpenter")).flavour == "karpenter"


def test_local_endpoints_are_the_stacks_services(isolated_settings: config.Settings) -> None:
    settings = isolated_settings
    t = Target("local", settings)
    url = {name: stack.get_service(name).url(settings) for name in stack.SERVICES}
    assert t.chat.base_url == url["model-server"]
    assert t.embeddings.base_url == url["ray-serve"]
    assert t.gateway.base_url == t.gateway_embeddings.base_url == url["gateway"]
    assert t.mcp_url("web-search") == url["mcp-web-search"] and t.mcp_url("filesystem") == url["mcp-filesystem"]
    assert t.chat.api_key == settings.model_server_api_key and t.embeddings.api_key == settings.serve_api_key
    assert t.gateway.api_key == settings.gateway_master_key
    models = (t.chat.model, t.embeddings.model, t.gateway.model, t.gateway_embeddings.model)
    assert models == (settings.served_chat_model, settings.served_embedding_model, settings.served_chat_model,
                      settings.served_embedding_model)
    with pytest.raises(TargetError, match="Unknown MCP server"):
        t.mcp_url("calendar")


def _in_cluster_services(items: list[Manifest]) -> set[str]:
    """host:port of every Service the rendered objects create (a RayService's serveService included)."""
    found = set()
    for m in items:
        spec = m.doc["spec"].get("serveService") if m.kind == "RayService" else m.doc if m.kind == "Service" else None
        if spec:
            meta = spec["metadata"]
            namespace = meta.get("namespace") or m.namespace
            found |= {f"{meta['name']}.{namespace}.svc:{p['port']}" for p in spec["spec"]["ports"]}
    return found


def test_eks_endpoints_are_in_cluster_service_names() -> None:
    t = Target("eks", eks_settings(namespace="team-a"))
    assert t.chat.base_url == "http://vllm-reasoning.team-a.svc:8000/v1"
    assert t.embeddings.base_url == "http://ray-serve-serve-svc.team-a.svc:8000/v1"
    assert t.gateway.base_url == "http://litellm.team-a.svc:4000/v1"
    assert t.mcp_url("web-search") == "http://mcp-web-search.team-a.svc:8000/mcp"
    assert t.mcp_url("filesystem") == "http://mcp-filesystem.team-a.svc:8000/mcp"
    # each is a Service the chapters' manifests create, in the target's namespace, on that port
    services = _in_cluster_services(t.render_all())
    urls = [t.chat.base_url, t.embeddings.base_url, t.gateway.base_url, t.mcp_url("web-search"),
            t.mcp_url("filesystem")]
    assert {urlparse(u).netloc for u in urls} <= services, services


@pytest.mark.parametrize("name", TARGETS)
def test_the_gateway_variables_win(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """WORKSHOP_GATEWAY_URL / WORKSHOP_GATEWAY_API_KEY (the agent's pod on EKS) override the derived gateway."""
    monkeypatch.setenv("WORKSHOP_GATEWAY_URL", "https://gateway.example.com/v1/")
    monkeypatch.setenv("WORKSHOP_GATEWAY_API_KEY", "sk-virtual-agent-key")
    monkeypatch.setenv("WORKSHOP_GATEWAY_MASTER_KEY", "sk-master")
    t = Target(name, eks_settings())
    assert t.gateway.base_url == t.gateway_embeddings.base_url == "https://gateway.example.com/v1"
    assert t.gateway.key() == t.gateway_embeddings.key() == "sk-virtual-agent-key"
    assert "sk-virtual-agent-key" not in t.gateway.describe()
    monkeypatch.delenv("WORKSHOP_GATEWAY_API_KEY")
    assert Target(name, eks_settings()).gateway.key() == "sk-master", "without a virtual key: the master key"
    monkeypatch.delenv("WORKSHOP_GATEWAY_URL")
    derived = Target(name, eks_settings()).gateway.base_url
    assert derived != "https://gateway.example.com/v1" and (".svc:" in derived) == (name == "eks")
    copy = Target(name, eks_settings()).with_environment(gateway_url="http://10.0.0.5:4000/v1",
                                                         gateway_api_key="sk-other")
    assert (copy.gateway.base_url, copy.gateway.key(), copy.name) == ("http://10.0.0.5:4000/v1", "sk-other", name)


def test_endpoint_client_and_description() -> None:
    endpoint = Endpoint("http://127.0.0.1:9/v1", SecretStr("sk-abcdefghijklmnopqrstuvwxyz"), "reasoning", "test")
    assert "abcdefghijklmnop" not in endpoint.describe() and "reasoning" in endpoint.describe()
    client = endpoint.client(max_retries=0)
    assert str(client.base_url).rstrip("/") == "http://127.0.0.1:9/v1" and client.api_key == endpoint.key()
    assert Endpoint("http://x/v1", None, "m", "v").key() == ""


def test_local_has_no_cluster_and_refuses_to_apply() -> None:
    t = Target("local", eks_settings(), chapters.get("04-gateway"))
    assert isinstance(t.cluster, Connection) and not t.cluster
    assert isinstance(t.cluster.reason, TargetError) and t.cluster.reason.fix
    assert "no cluster" in t.cluster.describe()
    with pytest.raises(TargetError):
        t.cluster.require()
    with pytest.raises(TargetError, match="no cluster to apply to") as raised:
        t.apply(t.render())
    assert 'TARGET = "eks"' in raised.value.fix
    assert not t.aws and isinstance(t.aws.reason, TargetError)
    assert t.banner() == "target: local · chapter 04-gateway · services ready: none needed"


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    missing = tmp_path / "no-such-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return missing


def test_eks_without_a_kubeconfig_says_why_and_refuses_to_apply(no_kubeconfig: Path) -> None:
    t = Target("eks", eks_settings(), chapters.get("02-vllm"))
    assert not t.cluster
    assert isinstance(t.cluster.reason, k8s.ClusterUnreachable)
    assert f"No kubeconfig at {no_kubeconfig}" in t.cluster.reason.message
    assert "aws eks update-kubeconfig" in t.cluster.reason.fix
    with pytest.raises(k8s.ClusterUnreachable, match="No kubeconfig"):
        t.apply(t.render())
    message = t.skip_message("cluster")
    assert "No kubeconfig" in message and "Fix: " in message and "%%on cluster" in message


def test_eks_vector_store_without_an_endpoint_says_how_to_get_one(
    no_aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKSHOP_OPENSEARCH_ENDPOINT", raising=False)
    t = Target("eks", eks_settings())
    assert t.settings.opensearch_endpoint is None
    with pytest.raises(TargetError, match="No OpenSearch endpoint") as raised:
        t.vector_store()
    error = raised.value
    assert "WORKSHOP_OPENSEARCH_ENDPOINT" in error.message and "credentials" in error.message.lower()
    assert "WORKSHOP_OPENSEARCH_ENDPOINT" in error.fix and "aws configure" in error.fix


# ---------------------------------------------------------------- the `%%on` cell magic


VERSION = {"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "x", "gitTreeState": "clean",
           "buildDate": "2026-06-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}


@pytest.fixture
def reachable_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A kubeconfig pointing at a loopback server that answers the API server's /version."""

    def answer(request: Request) -> tuple[int, Any]:
        return (200, VERSION) if request.path.rstrip("/") == "/version" else (404, {"kind": "Status"})

    with serve(answer) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: '{server.url}'}}}}]\n"
            "users: [{name: me, user: {token: test-token}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: me}}]\n"
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server.url


def test_runs_on_every_need_locally() -> None:
    t = Target("local", eks_settings())
    assert {need: runs_on(t, need) for need in NEEDS} == {"local": True, "eks": False, "cluster": False, "aws": False}
    with pytest.raises(TargetError, match="Unknown need"):
        runs_on(t, "gpu")


def test_runs_on_every_need_on_eks_without_cluster_or_credentials(
    no_kubeconfig: Path, no_aws_credentials: None
) -> None:
    t = Target("eks", eks_settings())
    assert {need: runs_on(t, need) for need in NEEDS} == {"local": False, "eks": True, "cluster": False, "aws": False}


def test_runs_on_every_need_on_eks_with_a_cluster_and_an_account(reachable_cluster: str) -> None:
    t = Target("eks", eks_settings())
    vars(t)["aws"] = Connection("AWS account", info="arn:aws:iam::111122223333:user/learner")  # the probe's result
    assert {need: runs_on(t, need) for need in NEEDS} == {"local": False, "eks": True, "cluster": True, "aws": True}
    assert t.cluster.info.server == reachable_cluster and t.cluster.info.version == "v1.36.0"


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real IPython shell (no history file, its profile in tmp_path), removed after the test."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])  # the shell installs its own __main__
    settings = Config()
    settings.HistoryManager.enabled = False
    builtin_names = set(vars(builtins))
    instance = InteractiveShell.instance(config=settings)
    yield instance
    InteractiveShell.clear_instance()
    for name in set(vars(builtins)) - builtin_names:  # __IPYTHON__ and display: later tests are not in IPython
        delattr(builtins, name)


def test_run_cell_body_runs_in_the_user_namespace(shell: Any) -> None:
    assert run_cell_body(shell, "a = 2\nb = a * 3\nb + 1") == 7
    assert shell.user_ns["a"] == 2 and shell.user_ns["b"] == 6
    assert run_cell_body(shell, "def f():\n    return g\ng = 5\nf()") == 5, "functions see the notebook's globals"
    assert run_cell_body(shell, "c = b * 2") is None and shell.user_ns["c"] == 12
    assert run_cell_body(shell, "b\nd = 1") is None, "only a final expression is the cell's value"
    assert run_cell_body(shell, "b") == 6
    assert run_cell_body(shell, "") is None


def test_run_cell_body_lets_errors_propagate(shell: Any) -> None:
    with pytest.raises(KeyError, match="boom"):
        run_cell_body(shell, "x = 1\nraise KeyError('boom')")
    assert shell.user_ns["x"] == 1, "what ran before the error stays"
    with pytest.raises(ZeroDivisionError):
        run_cell_body(shell, "1 / 0")


def test_the_on_magic_runs_or_skips_and_says_why_once(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    register_magics(Target("local", eks_settings()))

    def run(cell: str) -> Any:
        return shell.run_cell(cell, store_history=True)

    assert run("%%on eks\nskipped = 1").result is None and "skipped" not in shell.user_ns
    assert run("%%on eks\nskipped = 2").result is None
    first = capsys.readouterr().out
    assert first.count("%%on eks") == 1, "a run of skipped cells says why once"
    result = run("%%on local\nz = 3\nz * 2")
    assert result.result == 6 and shell.user_ns["z"] == 3
    capsys.readouterr()
    run("%%on eks\nskipped = 3")
    assert "%%on eks" in capsys.readouterr().out, "after a cell that ran, the next skipped cell says why again"
    failed = run("%%on local\n1 / 0")
    assert isinstance(failed.error_in_exec, ZeroDivisionError), "a failing cell fails (papermill and nbval see it)"
    bad = run("%%on gpu\nx = 1")
    assert isinstance(bad.error_in_exec, TargetError)


# ---------------------------------------------------------------- self_check and table


def test_self_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert self_check("exercise 1", None, 4) is None
    assert capsys.readouterr().out == "exercise 1: not attempted yet\n"
    assert self_check("exercise 1", 4, 4) is True
    assert capsys.readouterr().out == "exercise 1: correct\n"
    assert self_check("exercise 1", 5, 4, hint="two plus two") is False
    assert capsys.readouterr().out == "exercise 1: not quite: 5 (hint: two plus two)\n"
    assert self_check("exercise 2", "g6.12xlarge", check=lambda a: a.startswith("g6")) is True
    assert self_check("exercise 2", "m7i.large", check=lambda a: a.startswith("g6")) is False
    assert self_check("exercise 3", 0, expected=None) is False, "None can be the expected answer"
    capsys.readouterr()
    with pytest.raises(ValueError, match="expected"):
        self_check("exercise 4", 1)


def test_table_shows_blanks_and_has_a_fixed_id() -> None:
    import pandas as pd

    rows = [{"pool": "gpu", "cost": 4.6016, "note": None}, {"pool": "x86", "cost": float("nan")}, {"pool": "inf2"}]
    styler = table(rows, "pools-table", precision=2)
    assert styler.data.to_dict("records") == [{"pool": "gpu", "cost": 4.6016, "note": ""},
                                              {"pool": "x86", "cost": "", "note": ""},
                                              {"pool": "inf2", "cost": "", "note": ""}]
    html = styler.to_html()
    assert 'id="T_pools-table' in html and "4.60" in html and "4.6016" not in html
    assert "nan" not in html.lower() and "None" not in html
    assert html == table(rows, "pools-table", precision=2).to_html(), "the same rows give the same HTML"
    frame = table(pd.DataFrame(rows), "from-frame")
    assert frame.data.isna().sum().sum() == 0 and 'id="T_from-frame' in frame.to_html()
