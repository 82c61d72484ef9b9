"""The CEL rules of the upstream CRDs (`x-kubernetes-validations`), evaluated offline on rendered custom resources.

The API server runs these rules at admission; the project's strict JSON schemas (manifests/schemas/) do not state
them. Here every served version's openAPIV3Schema of each CRD in a folder (../shared/crds: Karpenter's NodePool and
EC2NodeClass, KubeRay's RayService and RayCluster) is walked, each rule is compiled with cel-python (`celpy`), and
it is evaluated the way Kubernetes does on every rendered object of that group, version and kind:

- the schema's `default`s are applied first (structural defaulting happens before validation);
- a rule sits at a schema path and binds `self` to the value there: an object, a whole list, a map (iterated by
  key), or, for a rule under `items`/`additionalProperties`, each element in turn; an absent field is not checked;
- `message`, else `messageExpression`, else the rule text is what a violation reports, with the field path.

What cannot be checked is reported, never silently passed:
- transition rules (they read `oldSelf`) run only on UPDATE against the stored object, so on a rendered manifest
  they are skipped WITH that reason (listed by `CelReport.skipped`);
- a rule that does not compile, calls a function neither celpy nor the shims below provide, or fails to evaluate
  is a finding (`cel-unevaluable`) naming the rule, because "could not check" must not read as "holds".

celpy 0.5.0 lacks the Kubernetes CEL libraries; the ones these CRDs use are shimmed: `find`/`findAll` (regex
library), `split`, `join`, `lowerAscii`, `upperAscii`, `trim`, `replace`, `indexOf`, `lastIndexOf`, `substring`
(cel-go strings extension) and `isSorted`, `sum`, `min`, `max` (list library). Not provided (reported if a rule
uses them): quantity(), url(), ip()/cidr(), semver(), format(), sets.*, and optional types (`self.?x`), which celpy
cannot parse. celpy does no type-checking or cost estimation (the API server does both when the CRD is created).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import celpy
import re2
import yaml
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

from helpers.config import ROOT
from helpers.errors import WorkshopError
from helpers.infra.manifests.objects import Finding, Manifest, as_docs, object_ref

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml reads the large CRDs ~10x faster

CRDS_DIR = ROOT.parent / "shared" / "crds"  # the upstream CRDs (data, never copied into the project)

RULE = "cel"
UNEVALUABLE = "cel-unevaluable"
TRANSITION_REASON = "transition rule (reads oldSelf): the API server runs it only on UPDATE, against the stored object"


class CrdsUnavailable(WorkshopError):
    """The folder of upstream CRDs is missing, so their CEL rules cannot be evaluated."""

    fix = "Put the upstream CRDs (karpenter.sh_nodepools.yaml, ray.io_rayservices.yaml, ...) in ../shared/crds."


# ---------------------------------------------------------------- Kubernetes CEL functions celpy lacks


def _text(value: Any) -> str:
    return str(value)


def _find(text: Any, pattern: Any) -> celtypes.StringType:
    match = re2.search(_text(pattern), _text(text))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: Any, pattern: Any, *limit: Any) -> celtypes.ListType:
    found = [m.group(0) for m in re2.finditer(_text(pattern), _text(text))]
    if limit and int(limit[0]) >= 0:
        found = found[: int(limit[0])]
    return celtypes.ListType([celtypes.StringType(x) for x in found])


def _split(text: Any, separator: Any, *limit: Any) -> celtypes.ListType:
    n = int(limit[0]) if limit else -1
    if n == 0:
        return celtypes.ListType([])
    parts = _text(text).split(_text(separator)) if n < 0 else _text(text).split(_text(separator), n - 1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join(items: Any, *separator: Any) -> celtypes.StringType:
    return celtypes.StringType((_text(separator[0]) if separator else "").join(_text(x) for x in items))


def _index_of(value: Any, item: Any, *start: Any) -> celtypes.IntType:
    if isinstance(value, list):
        return celtypes.IntType(list(value).index(item) if item in value else -1)
    return celtypes.IntType(_text(value).find(_text(item), int(start[0]) if start else 0))


def _last_index_of(value: Any, item: Any, *_: Any) -> celtypes.IntType:
    if isinstance(value, list):
        items = list(value)
        return celtypes.IntType(len(items) - 1 - items[::-1].index(item) if item in items else -1)
    return celtypes.IntType(_text(value).rfind(_text(item)))


def _substring(text: Any, start: Any, *end: Any) -> celtypes.StringType:
    return celtypes.StringType(_text(text)[int(start): int(end[0]) if end else None])


def _is_sorted(items: Any) -> celtypes.BoolType:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in zip(values, values[1:])))


SHIMS: dict[str, Any] = {
    "find": _find,
    "findAll": _find_all,
    "split": _split,
    "join": _join,
    "lowerAscii": lambda s: celtypes.StringType(_text(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(_text(s).upper()),
    "trim": lambda s: celtypes.StringType(_text(s).strip()),
    "replace": lambda s, a, b, *n: celtypes.StringType(_text(s).replace(_text(a), _text(b), int(n[0]) if n else -1)),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "isSorted": _is_sorted,
    "sum": lambda items: sum(items),
    "min": lambda items: min(items),
    "max": lambda items: max(items),
}

MACROS = frozenset({"has", "all", "exists", "exists_one", "filter", "map"})
AVAILABLE = frozenset(name for name in base_functions if re.fullmatch(r"[A-Za-z_]\w*", name)) | MACROS | set(SHIMS)

_STRING_LITERAL = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def called_functions(expression: str) -> set[str]:
    """The names of the functions and methods an expression calls (string literals removed first)."""
    return set(_CALL.findall(_STRING_LITERAL.sub("''", expression)))


# ---------------------------------------------------------------- the rules of a folder of CRDs


@dataclass
class CelRule:
    """One x-kubernetes-validations entry: where it sits in which kind's schema, and its compiled program."""

    api_version: str
    kind: str
    path: tuple[str, ...]  # ("spec", "template", "spec", "requirements", "[*]", "key")
    rule: str
    message: str | None
    message_expression: str | None
    field_path: str | None
    optional_old_self: bool
    program: Any = None
    message_program: Any = None
    problem: str | None = None  # why it cannot be evaluated (compile error, missing functions)

    @property
    def transition(self) -> bool:
        """Whether the rule compares with the stored object (oldSelf)."""
        return re.search(r"\boldSelf\b", _STRING_LITERAL.sub("''", self.rule)) is not None

    @property
    def where(self) -> str:
        """The schema path, e.g. spec.template.spec.requirements[*].key."""
        return "".join(p if p.startswith(("[", "{")) else "." + p for p in self.path).lstrip(".") or "(object)"

    def describe(self) -> str:
        """kind, schema path and message: how a report names the rule."""
        return f"{self.api_version} {self.kind} {self.where}: {self.message or self.rule}"


@dataclass
class CelRules:
    """Every rule and structural schema of a folder of CRDs, by (apiVersion, kind)."""

    folder: Path
    rules: dict[tuple[str, str], list[CelRule]]
    schemas: dict[tuple[str, str], dict[str, Any]]

    def count(self) -> int:
        """How many rules, over every served version."""
        return sum(len(r) for r in self.rules.values())


def _walk(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    for entry in schema.get("x-kubernetes-validations") or []:
        yield path, entry
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, path + (name,))
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], path + ("[*]",))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], path + ("{*}",))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            yield from _walk(sub, path)


def _compile(env: celpy.Environment, rule: CelRule) -> None:
    missing = called_functions(rule.rule + " " + (rule.message_expression or "")) - AVAILABLE
    if missing:
        rule.problem = f"calls functions this checker does not provide: {', '.join(sorted(missing))}"
        return
    try:
        rule.program = env.program(env.compile(rule.rule), functions=SHIMS)
        if rule.message_expression:
            rule.message_program = env.program(env.compile(rule.message_expression), functions=SHIMS)
    except Exception as error:  # celpy.celparser.CELParseError and friends: report, never skip
        rule.problem = f"does not compile with celpy: {type(error).__name__}: {str(error).splitlines()[0]}"


@lru_cache(maxsize=4)
def _load(folder: str) -> CelRules:
    path = Path(folder)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else []
    if not files:
        raise CrdsUnavailable(f"No CRDs to read CEL rules from: {path} is missing or holds no *.yaml")
    env = celpy.Environment()
    rules: dict[tuple[str, str], list[CelRule]] = {}
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for file in files:
        for crd in yaml.load_all(file.read_text(), Loader=_LOADER):  # noqa: S506 - a safe loader
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                key = (f"{group}/{version['name']}", kind)
                schema = version["schema"]["openAPIV3Schema"]
                schemas[key] = schema
                for where, entry in _walk(schema):
                    rule = CelRule(key[0], kind, where, entry["rule"], entry.get("message"),
                                   entry.get("messageExpression"), entry.get("fieldPath"),
                                   bool(entry.get("optionalOldSelf", False)))
                    _compile(env, rule)
                    rules.setdefault(key, []).append(rule)
    return CelRules(path, rules, schemas)


def load_rules(folder: Path | str | None = None) -> CelRules:
    """The CEL rules of every CRD in a folder (default ../shared/crds); CrdsUnavailable when there is none."""
    return _load(str(Path(folder or CRDS_DIR).resolve()))


# ---------------------------------------------------------------- evaluation


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """The value with the schema's defaults filled in where the parent exists (the API server's defaulting)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and isinstance(sub, dict) and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in [n for n in value if n not in properties]:
                value[name] = apply_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def values_at(value: Any, path: tuple[str, ...], where: str = "") -> Iterator[tuple[str, Any]]:
    """Every concrete value at a schema path, with its field path (an absent field yields nothing)."""
    if not path:
        yield where.lstrip(".") or "(object)", value
        return
    head, rest = path[0], path[1:]
    if head == "[*]":
        for i, item in enumerate(value if isinstance(value, list) else []):
            yield from values_at(item, rest, f"{where}[{i}]")
    elif head == "{*}":
        for key, item in (value.items() if isinstance(value, dict) else []):
            yield from values_at(item, rest, f"{where}[{key!r}]")
    elif isinstance(value, dict) and value.get(head) is not None:
        yield from values_at(value[head], rest, f"{where}.{head}")


def _holds(result: Any) -> bool:
    return result is True or result == celtypes.BoolType(True)


def evaluate_rule(rule: CelRule, value: Any, old: Any = None) -> tuple[str, str]:
    """('pass' | 'fail' | 'error', detail) for one value; `old` binds oldSelf (transition rules)."""
    context = {"self": celpy.json_to_cel(value)}
    if old is not None:
        context["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = rule.program.evaluate(context)
    except Exception as error:  # CELEvalError and anything a shim raises
        return "error", f"{type(error).__name__}: {str(error.args[0] if error.args else error)[:200]}"
    if isinstance(result, CELEvalError):
        return "error", f"CELEvalError: {str(result.args[0] if result.args else result)[:200]}"
    if _holds(result):
        return "pass", ""
    message = rule.message or f"failed rule: {rule.rule}"
    if rule.message_program is not None:
        try:
            message = str(rule.message_program.evaluate(context))
        except Exception:  # the API server falls back to the message too
            pass
    return "fail", message


@dataclass
class CelReport:
    """What the CEL check did: findings, how many evaluations ran, and what it skipped and why."""

    findings: list[Finding] = field(default_factory=list)
    evaluations: int = 0
    objects: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # rule description -> reason

    def summary(self) -> str:
        """One line: objects, evaluations, findings, skipped rules."""
        return (f"{self.objects} custom resource(s), {self.evaluations} rule evaluation(s), "
                f"{len(self.findings)} finding(s), {len(self.skipped)} transition rule(s) skipped")


FIX = "Change the field so the CRD's rule holds: the API server rejects the object with this message."
UNEVALUABLE_FIX = ("Check this rule by hand, or teach helpers/infra/manifests/cel.py the function it needs "
                   "(SHIMS); an unchecked rule must not pass silently.")


def _as_ray_cluster(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The RayCluster KubeRay creates from a RayService (its spec is rayClusterConfig)."""
    if doc.get("kind") != "RayService" or not isinstance((doc.get("spec") or {}).get("rayClusterConfig"), dict):
        return None
    meta = doc.get("metadata") or {}
    return {"apiVersion": doc.get("apiVersion"), "kind": "RayCluster",
            "metadata": {"name": f"{meta.get('name', '?')}-raycluster", "namespace": meta.get("namespace")},
            "spec": copy.deepcopy(doc["spec"]["rayClusterConfig"])}


def check_object(doc: dict[str, Any], rules: CelRules, report: CelReport, ref: str | None = None) -> None:
    """Evaluate every rule of the object's kind on it; add findings, counts and skips to the report."""
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key not in rules.schemas:
        return
    ref = ref or object_ref(doc)
    report.objects += 1
    defaulted = apply_defaults(copy.deepcopy(doc), rules.schemas[key])
    for rule in rules.rules.get(key, []):
        for where, value in values_at(defaulted, rule.path):
            at = f"{where}{'.' + rule.field_path.lstrip('.') if rule.field_path else ''}"
            if rule.transition and not rule.optional_old_self:
                report.skipped[rule.describe()] = TRANSITION_REASON
                continue
            if rule.problem:
                report.findings.append(Finding(ref, UNEVALUABLE, f"{at}: rule `{rule.rule}` {rule.problem}",
                                               UNEVALUABLE_FIX))
                continue
            report.evaluations += 1
            status, detail = evaluate_rule(rule, value)
            if status == "fail":
                report.findings.append(Finding(ref, RULE, f"{at}: {detail} (rule: {rule.rule})", FIX))
            elif status == "error":
                report.findings.append(Finding(ref, UNEVALUABLE, f"{at}: rule `{rule.rule}` failed to evaluate: "
                                                                 f"{detail}", UNEVALUABLE_FIX))


def cel_report(items: Iterable[Manifest | dict[str, Any]], folder: Path | str | None = None) -> CelReport:
    """Evaluate the CRDs' CEL rules on every rendered custom resource (and on the RayCluster each RayService makes)."""
    rules = load_rules(folder)
    report = CelReport()
    for doc in as_docs(items):
        check_object(doc, rules, report)
        cluster = _as_ray_cluster(doc)
        if cluster is not None:
            check_object(cluster, rules, report, ref=f"{object_ref(doc)} (its RayCluster)")
    return report


def cel_findings(items: Iterable[Manifest | dict[str, Any]], folder: Path | str | None = None) -> list[Finding]:
    """The CEL findings alone (see cel_report for what was skipped and counted)."""
    return cel_report(items, folder).findings
