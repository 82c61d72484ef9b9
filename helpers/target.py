"""The target a notebook runs against, as one object: which target, its endpoints, its cluster, how to apply.

A notebook builds it once (`t = workshop.setup(TARGET, "04-gateway")`); every helper that behaves
differently per target takes it from there, so no helper ever guesses a target of its own. The agent's
pod on EKS builds the same object from its environment (`Target.from_environment()`).

    local   the laptop: loopback services of helpers.local.stack, Milvus Lite, no cluster, no AWS
    eks     your account: in-cluster Service names, Amazon OpenSearch, the kubeconfig's cluster
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from helpers.chapters import Chapter
from helpers.config import Settings, get_settings, mask
from helpers.errors import WorkshopError

if TYPE_CHECKING:
    from helpers.infra.k8s import Applied
    from helpers.infra.manifests import Manifest
    from helpers.layers.rag.stores import VectorStore

TARGETS = ("local", "eks")
FLAVOURS = ("auto-mode", "karpenter")


class TargetError(WorkshopError):
    """The target cannot do what was asked (no cluster, no credentials, a local-only step on eks, ...)."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: its base URL, the bearer key, the model name to ask for, and what serves it."""

    base_url: str
    api_key: SecretStr | None
    model: str
    via: str

    def key(self) -> str:
        """The bearer key (never print it: `describe()` masks it)."""
        return self.api_key.get_secret_value() if self.api_key else ""

    def describe(self) -> str:
        """One line naming the endpoint, the key masked."""
        return f"{self.via} at {self.base_url}, model {self.model!r}, key {mask(self.api_key)}"

    def client(self, **kwargs: Any) -> Any:
        """An OpenAI client for this endpoint (kwargs go to openai.OpenAI: timeout, max_retries, http_client)."""
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.key() or "none", **kwargs)


@dataclass(frozen=True)
class Connection:
    """What a probe reached (`info`), or why it reached nothing (`reason`, a WorkshopError with its fix)."""

    what: str
    info: Any = None
    reason: WorkshopError | None = None

    def __bool__(self) -> bool:
        return self.info is not None

    def describe(self) -> str:
        """One line: what was reached, or why not."""
        if self.info is not None:
            return f"{self.what}: {self.info}"
        return f"{self.what}: none ({self.reason.message if self.reason else 'not probed'})"

    def require(self) -> Any:
        """The reached thing, or raise the reason (message and fix)."""
        if self.info is None:
            raise self.reason or TargetError(f"No {self.what}.")
        return self.info


@dataclass
class Target:
    """One target (`local` or `eks`) for one notebook: endpoints, vector store, cluster, AWS, rendering, apply."""

    name: str
    settings: Settings = field(default_factory=get_settings)
    chapter: Chapter | None = None
    flavour: str | None = None

    def __post_init__(self) -> None:
        if self.name not in TARGETS:
            raise TargetError(f"TARGET must be 'local' or 'eks', not {self.name!r}.",
                              "Set TARGET = \"local\" (this machine) or TARGET = \"eks\" (your cluster) in the "
                              "parameters cell, or pass -p TARGET eks to papermill.")
        self.flavour = self.flavour or self.settings.compute_mode
        if self.flavour not in FLAVOURS:
            raise TargetError(f"The node-provisioning flavour must be one of {FLAVOURS}, not {self.flavour!r}.",
                              "Use \"auto-mode\" (EKS Auto Mode) or \"karpenter\" (self-managed Karpenter).")

    @classmethod
    def from_environment(cls, settings: Settings | None = None) -> Target:
        """The target a program is told by its environment (WORKSHOP_TARGET), e.g. the agent's pod on EKS."""
        settings = settings or get_settings()
        return cls(settings.target, settings)

    @property
    def is_local(self) -> bool:
        """True on the laptop."""
        return self.name == "local"

    @property
    def is_eks(self) -> bool:
        """True against a cluster in your AWS account."""
        return self.name == "eks"

    # ------------------------------------------------------------ endpoints: one resolver each

    @property
    def chat(self) -> Endpoint:
        """The chat model server: llama.cpp on this machine (the stand-in for vLLM), vLLM's Service on EKS."""
        s = self.settings
        if self.is_local:
            return Endpoint(s.model_server_url, s.model_server_api_key, s.served_chat_model, "llama.cpp server")
        route = self._route("reasoning")
        return Endpoint(f"http://{route['eks_service']}.{s.namespace}.svc:{route.get('eks_port', 8000)}/v1",
                        s.model_server_api_key, s.served_chat_model, "vLLM (in the cluster)")

    @property
    def embeddings(self) -> Endpoint:
        """The embedding service: chapter 03's Ray Serve app, under a local Ray here and on KubeRay on EKS."""
        s = self.settings
        if self.is_local:
            return Endpoint(f"http://{s.host}:{s.serve_port}/v1", s.serve_api_key, s.served_embedding_model,
                            "Ray Serve app (local Ray)")
        route = self._route("embedding")
        return Endpoint(f"http://{route['eks_service']}.{s.namespace}.svc:{route.get('eks_port', 8000)}/v1",
                        s.serve_api_key, s.served_embedding_model, "Ray Serve app (KubeRay)")

    @property
    def gateway(self) -> Endpoint:
        """The LiteLLM gateway, the platform's front door: chat and embeddings for the agent and the evaluation.

        On EKS, WORKSHOP_GATEWAY_URL and WORKSHOP_GATEWAY_API_KEY (the agent's virtual key) win when set, as in
        the agent's pod; otherwise the in-cluster Service and the master key."""
        s = self.settings
        key = s.gateway_api_key or s.gateway_master_key
        if s.gateway_url:
            return Endpoint(s.gateway_url.rstrip("/"), key, s.served_chat_model, "gateway")
        if self.is_local:
            return Endpoint(f"http://{s.host}:{s.gateway_port}/v1", key, s.served_chat_model, "gateway (local)")
        gw = self._parameters("04-gateway")["gateway"]
        return Endpoint(f"http://{gw['name']}.{s.namespace}.svc:{gw['port']}/v1", key, s.served_chat_model,
                        "gateway (in the cluster)")

    @property
    def gateway_embeddings(self) -> Endpoint:
        """The gateway's `embedding` route: what the knowledge base, the agent and the evaluation embed through."""
        return replace(self.gateway, model=self.settings.served_embedding_model)

    def mcp_url(self, server: str) -> str:
        """The MCP endpoint of `web-search` or `filesystem`: loopback here, the in-cluster Service on EKS."""
        if server not in ("web-search", "filesystem"):
            raise TargetError(f"Unknown MCP server {server!r}.", "Use 'web-search' or 'filesystem'.")
        s = self.settings
        configured = s.mcp_web_search_url if server == "web-search" else s.mcp_filesystem_url
        if configured:
            return configured
        if self.is_local:
            port = s.mcp_web_search_port if server == "web-search" else s.mcp_filesystem_port
            return f"http://{s.host}:{port}/mcp"
        return f"http://mcp-{server}.{s.namespace}.svc:8000/mcp"

    def vector_store(self, collection: str | None = None) -> VectorStore:
        """The knowledge base's vector store: Milvus Lite in the state folder here, Amazon OpenSearch on EKS.

        On EKS the domain endpoint comes from WORKSHOP_OPENSEARCH_ENDPOINT (the agent's pod) or chapter 06's
        CloudFormation stack outputs; without either there is no store, and the error says how to get one."""
        from helpers.layers.rag.stores import open_store

        extra = {"collection": collection} if collection else {}
        if self.is_local:
            from helpers.layers.rag.stores.milvus import default_path

            return open_store("milvus", uri=default_path(self.settings), **extra)
        endpoint = self.opensearch_endpoint()
        return open_store("opensearch", endpoint=endpoint, region=self.settings.aws_region,
                          **({"index": collection} if collection else {}))

    def opensearch_endpoint(self) -> str:
        """Chapter 06's OpenSearch domain endpoint: WORKSHOP_OPENSEARCH_ENDPOINT, else the CloudFormation stack's
        outputs; TargetError (with the fix) when neither gives one, saying why (no AWS account, no stack, ...)."""
        return self.settings.opensearch_endpoint or self._opensearch_from_stack()

    def _opensearch_from_stack(self) -> str:
        from helpers.layers.rag import deploy

        if not self.aws:  # stack_outputs reads "no credentials" as "no stack": say the real reason
            reason = self.aws.reason
            raise TargetError(f"No OpenSearch endpoint: WORKSHOP_OPENSEARCH_ENDPOINT is not set and chapter 06's "
                              f"CloudFormation stack cannot be read ({reason.message if reason else 'no AWS account'})",
                              f"{reason.fix + ' ' if reason and reason.fix else ''}Or set WORKSHOP_OPENSEARCH_ENDPOINT "
                              "to an existing domain's endpoint.")
        try:
            outputs = deploy.stack_outputs(self.settings)
        except WorkshopError as error:
            raise TargetError(f"No OpenSearch endpoint: {error.message}",
                              "Create the domain in notebook 06 (DEPLOY_OPENSEARCH=True), or set "
                              "WORKSHOP_OPENSEARCH_ENDPOINT to an existing domain's endpoint.") from None
        endpoint = outputs.get("DomainEndpoint") if outputs else None
        if not endpoint:
            raise TargetError("No OpenSearch endpoint: chapter 06's CloudFormation stack has no DomainEndpoint "
                              "output (it does not exist, or is still being created).",
                              "Create the domain in notebook 06 (DEPLOY_OPENSEARCH=True) and wait for it, or set "
                              "WORKSHOP_OPENSEARCH_ENDPOINT to an existing domain's endpoint.")
        return str(endpoint)

    # ------------------------------------------------------------ the cluster and the AWS account

    @cached_property
    def cluster(self) -> Connection:
        """The cluster the kubeconfig points at (eks), or why there is none; probed once per notebook."""
        if self.is_local:
            return Connection("cluster", reason=TargetError(
                "The local target uses no cluster.", "Run the notebook with TARGET = \"eks\" for the cluster steps."))
        from helpers.infra import k8s

        try:
            info = k8s.cluster_reachable()
        except k8s.ClusterUnreachable as error:
            return Connection("cluster", reason=error)
        return Connection("cluster", info=info)

    @cached_property
    def aws(self) -> Connection:
        """The AWS identity the eks steps run as, or why there is none; probed once per notebook."""
        if self.is_local:
            return Connection("AWS account", reason=TargetError(
                "The local target uses no AWS account.", "Run the notebook with TARGET = \"eks\" for the AWS steps."))
        from helpers.infra import aws

        try:
            who = aws.identity()
        except aws.AwsUnavailable as error:
            return Connection("AWS account", reason=error)
        return Connection("AWS account", info=who)

    def apply(self, objects: list[Manifest | dict[str, Any]], dry_run: bool = False) -> list[Applied]:
        """Server-side apply objects to this target's cluster; without one, raise why (with the fix)."""
        from helpers.infra import k8s

        if self.is_local:
            raise TargetError("The local target has no cluster to apply to.",
                              "Run the notebook with TARGET = \"eks\"; locally the same components run as processes.")
        self.cluster.require()
        return k8s.apply(objects, dry_run=dry_run)

    # ------------------------------------------------------------ manifests, rendered for this target

    def render(self, chapter: str | None = None, overrides: dict[str, Any] | None = None,
               include_on_demand: bool = False) -> list[Manifest]:
        """The objects of a chapter (default: this notebook's) rendered for this target and flavour."""
        from helpers.infra import manifests

        return manifests.render_chapter(self._chapter_id(chapter), target=self.name, flavour=self.flavour,
                                        overrides=overrides, include_on_demand=include_on_demand,
                                        settings=self.settings)

    def render_all(self, overrides: dict[str, Any] | None = None, include_on_demand: bool = False) -> list[Manifest]:
        """Every chapter's objects for this target and flavour (what the cost and the teardown plan see)."""
        from helpers.infra import manifests

        return manifests.render(self.name, self.flavour, overrides=overrides, include_on_demand=include_on_demand,
                                settings=self.settings)

    def render_text(self, template: str, chapter: str | None = None, overrides: dict[str, Any] | None = None,
                    name: str | None = None) -> str:
        """One template as YAML text with its comments (or, with `name`, just that object's part)."""
        from helpers.infra import manifests

        chapter_id = self._chapter_id(chapter)
        if name:
            return manifests.render_object_text(chapter_id, template, name, target=self.name, flavour=self.flavour,
                                                overrides=overrides, settings=self.settings)
        return manifests.render_text(chapter_id, template, target=self.name, flavour=self.flavour,
                                     overrides=overrides, settings=self.settings)

    def with_flavour(self, flavour: str) -> Target:
        """The same target and chapter with another node-provisioning flavour (to render both side by side)."""
        return Target(self.name, self.settings, self.chapter, flavour)

    def _chapter_id(self, chapter: str | None) -> str:
        if chapter:
            return chapter
        if self.chapter is None:
            raise TargetError("This target belongs to no chapter, so it cannot pick one.", "Pass chapter=\"04-gateway\".")
        return self.chapter.id

    def _parameters(self, chapter: str) -> dict[str, Any]:
        from helpers.infra import manifests

        return manifests.chapter_parameters(chapter)

    def _route(self, name: str) -> dict[str, Any]:
        return self._parameters("04-gateway")["routes"][name]

    # ------------------------------------------------------------ what a notebook prints

    def skip_message(self, need: str) -> str:
        """Why cells that need `need` (local, eks, cluster, aws) do not run on this target, and what would run them."""
        if need == "local":
            return (f"{self.name} target: the cells marked `%%on local` use the laptop stack and are skipped "
                    "(run with TARGET = \"local\" to see them work).")
        if need == "eks":
            return ("local target: the cells marked `%%on eks` prepare your AWS account and are skipped; "
                    "run with TARGET = \"eks\" to run them.")
        if need in ("cluster", "aws"):
            connection = self.cluster if need == "cluster" else self.aws
            if self.is_local:
                return f"local target: the cells marked `%%on {need}` need your {connection.what} and are skipped."
            reason = connection.reason
            fix = f"\nFix: {reason.fix}" if reason and reason.fix else ""
            return (f"No {connection.what}: {reason.message if reason else 'not probed'}{fix}\n"
                    f"Everything above ran offline; the cells marked `%%on {need}` are skipped.")
        raise TargetError(f"Unknown need {need!r}.", "Use one of: local, eks, cluster, aws.")

    def banner(self, services: list[str] | None = None) -> str:
        """The set-up line: target, chapter, what runs where."""
        chapter = f"chapter {self.chapter.id}" if self.chapter else "no chapter"
        if self.is_local:
            ready = ", ".join(services or []) or "none needed"
            return f"target: local · {chapter} · services ready: {ready}"
        lines = [f"target: eks ({self.flavour}, region {self.settings.aws_region}, cluster "
                 f"{self.settings.cluster_name}) · {chapter}"]
        lines.append("  " + self.aws.describe())
        lines.append("  " + self.cluster.describe())
        if services:
            lines.append("  local services ready: " + ", ".join(services))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Target({self.name!r}, chapter={self.chapter.id if self.chapter else None!r}, flavour={self.flavour!r})"

    # ------------------------------------------------------------ a target for tests and programs

    def with_environment(self, **env: str) -> Target:
        """A copy whose settings also read these WORKSHOP_* variables (e.g. gateway_url=...), for programs and tests."""
        values = {**self.settings.model_dump(), **env}
        return Target(self.name, Settings(**values), self.chapter, self.flavour)

