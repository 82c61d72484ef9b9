"""Schema validation: core kinds against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict), custom
resources against the project's strict JSON schemas in manifests/schemas/ (checked against the upstream CRDs)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

from helpers.infra.manifests.objects import KUBERNETES_VERSION, SCHEMAS_DIR, Finding, Manifest, as_docs, object_ref


def _k8s_definitions_resource() -> Resource:
    folder = kubernetes_validate.__path__[0]
    path = Path(folder) / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json"
    return Resource.from_contents(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The project's schemas for custom resources, keyed by (apiVersion, kind)."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema.get("properties", {})
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


@cache
def _custom_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = custom_schemas()[(api_version, kind)]
    definitions = _k8s_definitions_resource()
    registry = Registry().with_resource(definitions.id() or "", definitions)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def validate_document(doc: dict[str, Any]) -> list[Finding]:
    """Schema findings for one object: custom kinds against manifests/schemas, core kinds via kubernetes-validate."""
    ref = object_ref(doc)
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key in custom_schemas():
        errors = sorted(_custom_validator(*key).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        return [
            Finding(
                ref,
                "schema",
                f"{_path(e.absolute_path)}: {e.message}",
                "Fix the field, or if the workshop now needs it, add it to manifests/schemas/ "
                "(checked against the upstream CRD).",
            )
            for e in errors
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [
            Finding(
                ref,
                "schema",
                f"{_path(error.path)}: {error.message}",
                f"Correct the field against the Kubernetes {KUBERNETES_VERSION} API reference.",
            )
        ]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            Finding(
                ref,
                "schema",
                f"no schema for {key[0]} {key[1]}",
                "Add a strict JSON schema for this custom resource to manifests/schemas/.",
            )
        ]
    return []


def validate(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """Schema findings for every object; an empty list means all are valid."""
    return [finding for doc in as_docs(items) for finding in validate_document(doc)]
