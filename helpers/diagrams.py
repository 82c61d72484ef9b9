"""The platform's architecture as a picture: the local target and the EKS target side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch

Layer = Literal["client", "agent", "gateway", "hosting", "data", "observability"]

# (fill, edge) colours per layer: the legend explains them.
LAYER_COLOURS: dict[str, tuple[str, str]] = {
    "client": ("#f2f4f7", "#5b6472"),
    "agent": ("#efe7fd", "#7048c8"),
    "gateway": ("#fff0dd", "#c4680f"),
    "hosting": ("#e3eefc", "#2462c4"),
    "data": ("#e2f5e7", "#23844a"),
    "observability": ("#fce6ee", "#b8336a"),
}
LAYER_NAMES: dict[str, str] = {
    "client": "client", "agent": "agent", "gateway": "gateway", "hosting": "model hosting",
    "data": "data", "observability": "observability",
}
INK = "#1f2328"
MUTED = "#57606a"
REQUEST = "#3d4450"
TRACE = "#b8336a"
FONT = "DejaVu Sans"  # ships with matplotlib: the same glyphs on every machine

PANEL_W, PANEL_H = 68.0, 74.0  # panel data units: 1 unit = 0.1 inch, so boxes keep their shape
TITLES = {"local": "local — one laptop", "eks": "eks — Amazon EKS"}
SUBTITLES = {
    "local": "the real components on 127.0.0.1, CPU-only stand-ins",
    "eks": "the same components in namespace llm-workshop",
}

SAVE_RC = {"svg.hashsalt": "llm-eks-workshop", "svg.fonttype": "path", "path.simplify": True}


@dataclass(frozen=True)
class Box:
    """One component: where it sits in a panel, its name, details and layer."""

    key: str
    x: float
    y: float
    w: float
    h: float
    title: str
    lines: tuple[str, ...]
    layer: Layer
    optional: bool = False  # deployed only on request: drawn with a dashed border


def _gpus_text(server: dict) -> str:
    """'TP=4 on 4 GPUs': a vLLM server's tensor parallelism and GPUs, as chapter 02's parameters.yaml sets them."""
    gpus = int(server["gpus"])
    return f"TP={server['tensor_parallel']} on {gpus} GPU{'s' if gpus != 1 else ''}"


def _components(target: str) -> list[Box]:
    """The boxes of one panel, laid out on a 68 × 74 grid (row by row, top to bottom)."""
    left, centre, right = (1.5, 14.0), (21.0, 24.5), (51.0, 15.5)
    eks = target == "eks"
    boxes = [
        Box("client", centre[0] + 1.25, 61.0, 22.0, 5.6, "Client / notebook",
            ("Jupyter, curl: your laptop",) if eks else ("Jupyter on this laptop",), "client"),
        Box("agent", centre[0], 47.5, centre[1], 8.4, "Strands supervisor agent",
            ("agent API: FastAPI /query", "RAGAs relevance scoring"), "agent"),
        Box("mcp", left[0], 47.5, left[1], 8.4, "MCP servers", ("web search", "filesystem"), "agent"),
        Box("vector", right[0], 47.5, right[1], 8.4,
            "OpenSearch" if eks else "Milvus Lite",
            ("Amazon OpenSearch", "k-NN vector index") if eks else ("vector store", "one local file"), "data"),
        Box("gateway", centre[0], 33.5, centre[1], 8.4, "LiteLLM gateway",
            ("OpenAI-compatible proxy", "PII guardrail · virtual keys" if eks else "PII guardrail · master key"),
            "gateway"),
        Box("cache", left[0], 33.5, left[1], 8.4, "Redis cache", ("gateway", "response cache"), "data"),
        Box("traces", right[0], 33.5, right[1], 8.4, "Langfuse" if eks else "Arize Phoenix",
            ("traces (OTLP)", "self-hosted, Helm") if eks else ("traces (OTLP)", "local trace UI"), "observability"),
    ]
    if eks:
        from helpers.infra.manifests import chapter_parameters

        servers = chapter_parameters("02-vllm")["servers"]
        boxes += [
            Box("chat", 1.5, 16.5, 20.5, 10.0, "vLLM · Qwen3-14B",
                ("chat + tool calls", _gpus_text(servers["reasoning"]), "pool: gpu"), "hosting"),
            Box("vision", 23.75, 16.5, 20.5, 10.0, "vLLM vision",
                ("Qwen2.5-VL-7B", f"{_gpus_text(servers['vision'])} · pool: gpu", "optional: DEPLOY_VISION"),
                "hosting", optional=True),
            Box("embed", 46.0, 16.5, 20.5, 10.0, "Ray Serve + llama.cpp",
                ("embeddings on CPU", "KubeRay RayService", "pool: graviton"), "hosting"),
        ]
    else:
        boxes += [
            Box("chat", 4.0, 16.5, 26.0, 10.0, "llama.cpp server",
                ("chat + tool calls", "stand-in for vLLM", "OpenAI-compatible API"), "hosting"),
            Box("embed", 38.0, 16.5, 26.0, 10.0, "Ray Serve + llama.cpp",
                ("embeddings on CPU", "the same Serve app", "under a local Ray"), "hosting"),
        ]
    return boxes


def _draw_box(ax: Axes, box: Box) -> None:
    fill, edge = LAYER_COLOURS[box.layer]
    ax.add_patch(FancyBboxPatch((box.x, box.y), box.w, box.h, boxstyle="round,pad=0,rounding_size=1.1",
                                facecolor=fill, edgecolor=edge, linewidth=1.5, zorder=2,
                                linestyle=(0, (4, 2)) if box.optional else "-"))
    top = box.y + box.h - 1.05
    ax.text(box.x + box.w / 2, top, box.title, ha="center", va="top", fontsize=10.5, fontweight="bold",
            color=INK, zorder=4, family=FONT)
    for i, line in enumerate(box.lines):
        ax.text(box.x + box.w / 2, top - 2.45 - 1.75 * i, line, ha="center", va="top", fontsize=8.8,
                color=MUTED, zorder=4, family=FONT)


def _edge_point(box: Box, side: str, shift: float = 0.0) -> tuple[float, float]:
    """The middle of one side of a box (moved along that side by `shift`)."""
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    return {
        "top": (cx + shift, box.y + box.h),
        "bottom": (cx + shift, box.y),
        "left": (box.x, cy + shift),
        "right": (box.x + box.w, cy + shift),
    }[side]


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *,
           kind: Literal["request", "trace", "link"] = "request", label: str = "",
           label_at: float = 0.5, label_offset: tuple[float, float] = (0.0, 0.0)) -> None:
    """Draw a request (solid), trace (dashed) or two-way link arrow, with an optional label on it."""
    colour = TRACE if kind == "trace" else REQUEST
    props = dict(arrowstyle="<|-|>" if kind == "link" else "-|>", color=colour, lw=1.5, shrinkA=1.5, shrinkB=1.5,
                 mutation_scale=13, linestyle=(0, (4, 2.5)) if kind == "trace" else "-")
    ax.annotate("", xy=end, xytext=start, arrowprops=props, zorder=3)
    if label:
        x = start[0] + (end[0] - start[0]) * label_at + label_offset[0]
        y = start[1] + (end[1] - start[1]) * label_at + label_offset[1]
        ax.text(x, y, label, ha="center", va="center", fontsize=8.3, style="italic",
                color=TRACE if kind == "trace" else MUTED, zorder=5, family=FONT,
                bbox=dict(boxstyle="round,pad=0.18", facecolor="white", edgecolor="none"))


def _draw_band(ax: Axes, target: str) -> None:
    """The bottom band: Karpenter node pools on EKS, the laptop itself locally."""
    fill, edge = LAYER_COLOURS["hosting"]
    ax.add_patch(FancyBboxPatch((1.5, 1.5), PANEL_W - 3, 10.5, boxstyle="round,pad=0,rounding_size=1.1",
                                facecolor="white", edgecolor=edge, linewidth=1.2, linestyle=(0, (4, 2)), zorder=1))
    if target != "eks":
        ax.text(PANEL_W / 2, 8.6, "no Kubernetes, no GPU", ha="center", va="center", fontsize=10,
                fontweight="bold", color=edge, family=FONT)
        ax.text(PANEL_W / 2, 5.0, "each service is a local process on 127.0.0.1, started by helpers.local.stack",
                ha="center", va="center", fontsize=8.8, color=MUTED, family=FONT)
        return
    ax.text(3.0, 10.4, "Karpenter node pools", ha="left", va="center", fontsize=9.5, fontweight="bold",
            color=edge, family=FONT)
    ax.text(PANEL_W - 3.0, 10.4, "nodes start when pods need them, stop when idle", ha="right", va="center",
            fontsize=8.3, style="italic", color=MUTED, family=FONT)
    pools = (("gpu", "g5/g6 NVIDIA GPUs"), ("graviton", "arm64 CPUs"),
             ("x86", "amd64 CPUs"), ("inf2", "Inferentia2, optional"))
    chip_w, gap, x = 15.0, 0.67, 3.0
    for name, detail in pools:
        ax.add_patch(FancyBboxPatch((x, 2.6), chip_w, 6.2, boxstyle="round,pad=0,rounding_size=0.9",
                                    facecolor=fill, edgecolor=edge, linewidth=1.1, zorder=2))
        ax.text(x + chip_w / 2, 7.3, name, ha="center", va="center", fontsize=9.8, fontweight="bold",
                color=INK, zorder=4, family=FONT)
        ax.text(x + chip_w / 2, 4.6, detail, ha="center", va="center", fontsize=8.5, color=MUTED, zorder=4,
                family=FONT)
        x += chip_w + gap


def _draw_panel(ax: Axes, target: str) -> None:
    ax.set_xlim(0, PANEL_W)
    ax.set_ylim(0, PANEL_H)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.2, 0.2), PANEL_W - 0.4, PANEL_H - 0.4, boxstyle="round,pad=0,rounding_size=1.6",
                                facecolor="#fbfcfd", edgecolor="#d0d7de", linewidth=1.0, zorder=0))
    ax.text(1.8, PANEL_H - 2.4, TITLES[target], ha="left", va="center", fontsize=13.5, fontweight="bold",
            color=INK, family=FONT)
    ax.text(1.8, PANEL_H - 5.6, SUBTITLES[target], ha="left", va="center", fontsize=9, color=MUTED, family=FONT)

    boxes = {b.key: b for b in _components(target)}
    for box in boxes.values():
        _draw_box(ax, box)
    _draw_band(ax, target)

    b = boxes
    _arrow(ax, _edge_point(b["client"], "bottom"), (_edge_point(b["client"], "bottom")[0], b["agent"].y + b["agent"].h),
           label="/query")
    _arrow(ax, _edge_point(b["agent"], "left"), _edge_point(b["mcp"], "right"), label="tools", label_offset=(0, 1.3))
    _arrow(ax, _edge_point(b["agent"], "right", 1.5), _edge_point(b["vector"], "left", 1.5), label="search",
           label_offset=(0, 1.3))
    _arrow(ax, _edge_point(b["agent"], "bottom"), _edge_point(b["gateway"], "top"), label="OpenAI API",
           label_offset=(0, 0))
    _arrow(ax, _edge_point(b["gateway"], "left"), _edge_point(b["cache"], "right"), kind="link")
    # traces: the agent and the gateway both export OTLP spans (the deployed agent only when its environment says so)
    _arrow(ax, _edge_point(b["agent"], "right", -2.6), (b["traces"].x + 3.0, b["traces"].y + b["traces"].h),
           kind="trace", label="OTLP, opt-in" if target == "eks" else "OTLP", label_at=0.55)
    _arrow(ax, _edge_point(b["gateway"], "right", -1.5), _edge_point(b["traces"], "left", -1.5), kind="trace")
    gw_bottom = _edge_point(b["gateway"], "bottom")
    servers = ["chat", "vision", "embed"] if target == "eks" else ["chat", "embed"]
    labels = {"chat": "chat", "vision": "vision", "embed": "embeddings"}
    for key in servers:
        top = _edge_point(b[key], "top")
        start = (gw_bottom[0] + {"chat": -5.0, "vision": 0.0, "embed": 5.0}[key], gw_bottom[1])
        _arrow(ax, start, top, label=labels[key], label_at=0.5)


def _legend(fig: Figure, ncol: int) -> None:
    handles: list[Patch | Line2D] = [
        Patch(facecolor=fill, edgecolor=edge, label=LAYER_NAMES[layer]) for layer, (fill, edge) in LAYER_COLOURS.items()
    ]
    handles += [
        Line2D([], [], color=REQUEST, lw=1.5, label="request path"),
        Line2D([], [], color=TRACE, lw=1.5, linestyle=(0, (4, 2.5)), label="OTLP traces"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=9.5,
               bbox_to_anchor=(0.5, 0.0), handlelength=2.2, columnspacing=1.6, prop={"family": FONT, "size": 9.5})


def architecture_figure(panel: str | None = None) -> Figure:
    """The architecture drawn for one target ("local" or "eks"), or both side by side when panel is None."""
    targets = ["local", "eks"] if panel is None else [panel]
    unknown = [t for t in targets if t not in TITLES]
    if unknown:
        raise ValueError(f"Unknown target {unknown[0]!r}: use 'local', 'eks' or None for both.")
    panel_in = (PANEL_W / 10, PANEL_H / 10)  # 6.8 × 7.4 inches
    margin, gap, top, bottom = 0.2, 0.3, 0.75, 0.75 if len(targets) == 2 else 1.0
    width = 2 * margin + len(targets) * panel_in[0] + (len(targets) - 1) * gap
    height = bottom + panel_in[1] + top
    fig = Figure(figsize=(width, height), dpi=100, facecolor="white")
    for i, t in enumerate(targets):
        left = margin + i * (panel_in[0] + gap)
        ax = fig.add_axes((left / width, bottom / height, panel_in[0] / width, panel_in[1] / height))
        _draw_panel(ax, t)
    heading = ("An LLM platform on Amazon EKS, and the same platform on one laptop" if panel is None
               else f"The LLM platform workshop: the {targets[0]} target")
    fig.text(0.5, 1 - 0.38 / height, heading, ha="center", va="center", fontsize=15, fontweight="bold", color=INK,
             family=FONT)
    _legend(fig, ncol=8 if len(targets) == 2 else 4)
    return fig


def save_architecture(path: Path, panel: str | None = None, dpi: int = 150) -> Path:
    """Write the architecture figure (PNG by default; SVG/PDF by suffix) reproducibly, byte for byte."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}}.get(fmt)
    with matplotlib.rc_context(SAVE_RC):
        fig = architecture_figure(panel)
        fig.savefig(path, format=fmt, dpi=dpi, facecolor="white", metadata=metadata)
    return path



# ---------------------------------------------------------------- the code: where each target's difference lives


CODE_W, CODE_H = 100.0, 60.0


def _code_boxes() -> list[Box]:
    """The boxes of the code map: the notebook and its Target, the library, and where each target runs things."""
    return [
        Box("notebook", 28.0, 50.0, 44.0, 7.0, "notebook  (TARGET = \"local\" | \"eks\")",
            ("t = workshop.setup(TARGET, \"04-gateway\")",), "client"),
        Box("target", 28.0, 39.5, 44.0, 7.4, "helpers.target.Target",
            ("endpoints · vector store · cluster · apply · render", "the ONE place that knows the target"), "agent"),
        Box("layers", 2.0, 24.0, 44.0, 11.0, "helpers/layers  (one per hop of a request)",
            ("models · vllm · ray · gateway · observability", "rag · agent · mcp",
             "local.py: how its program starts · deploy.py: its eks side"), "gateway"),
        Box("infra", 54.0, 24.0, 44.0, 11.0, "helpers/infra  (the cluster and the account)",
            ("manifests: render · validate · policy", "k8s · aws · scheduling · teardown"), "data"),
        Box("local", 2.0, 12.5, 44.0, 8.0, "helpers/local",
            ("stack: start, watch, restart, stop", "services: the table of programs"), "hosting"),
        Box("programs", 2.0, 1.5, 44.0, 8.0, "local: services/  (programs, own process or venv)",
            ("llama_server · ray_app · mcp · agent_api", "gateway hooks (LiteLLM venv) · trace_store"), "hosting"),
        Box("cloud", 54.0, 1.5, 44.0, 8.0, "eks: Kubernetes API + AWS APIs",
            ("server-side apply of manifests/<chapter>/", "the same programs as container images"),
         "observability"),
    ]


def code_layout_figure() -> Figure:
    """Where code runs, and where each target's difference lives: notebook -> Target -> library -> processes or APIs."""
    fig = Figure(figsize=(CODE_W / 10, CODE_H / 10 + 0.6), dpi=100, facecolor="white")
    ax = fig.add_axes((0.0, 0.0, 1.0, CODE_H / (CODE_H + 6)))
    ax.set_xlim(0, CODE_W)
    ax.set_ylim(0, CODE_H)
    ax.set_aspect("equal")
    ax.axis("off")
    b = {box.key: box for box in _code_boxes()}
    for box in b.values():
        _draw_box(ax, box)
    _arrow(ax, _edge_point(b["notebook"], "bottom"), _edge_point(b["target"], "top"), label="builds once")
    _arrow(ax, _edge_point(b["target"], "bottom", -8), _edge_point(b["layers"], "top", 8), label="every helper asks t")
    _arrow(ax, _edge_point(b["target"], "bottom", 8), _edge_point(b["infra"], "top", -8), label="render · apply")
    _arrow(ax, _edge_point(b["layers"], "bottom"), _edge_point(b["local"], "top"), label="local")
    _arrow(ax, _edge_point(b["local"], "bottom"), _edge_point(b["programs"], "top"), label="starts")
    _arrow(ax, _edge_point(b["infra"], "bottom"), _edge_point(b["cloud"], "top"), label="eks")
    _arrow(ax, _edge_point(b["layers"], "right"), _edge_point(b["infra"], "left"), label="deploy.py")
    fig.text(0.5, 1 - 0.3 / (CODE_H / 10 + 0.6), "Where the code runs: one Target per notebook, the library apart from "
             "the programs", ha="center", va="center", fontsize=13, fontweight="bold", color=INK, family=FONT)
    return fig


def save_code_layout(path: Path, dpi: int = 120) -> Path:
    """Write the code map as PNG, reproducibly (ARCHITECTURE.md shows it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(SAVE_RC):
        code_layout_figure().savefig(path, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return path

if __name__ == "__main__":
    images = Path(__file__).resolve().parents[1] / "book" / "images"
    print(f"wrote {save_architecture(images / 'architecture.png').name}, "
          f"{save_code_layout(images / 'code-layout.png').name}")
