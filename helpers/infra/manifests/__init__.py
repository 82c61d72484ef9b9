"""The workshop's Kubernetes manifests: render them for a target, validate them, check the workshop's policy.

Every chapter folder under `manifests/` holds Jinja2 templates (`*.yaml.j2`) and a `parameters.yaml` of defaults.

    objects   Manifest and Finding, the workshop's labels and tags, pod templates
    render    one renderer for both targets (settings + chapter defaults + overrides)
    validate  core kinds against Kubernetes' schemas, custom resources against manifests/schemas/
    policy    the workshop's rules; check() = validate() + policy()
    karpenter the node labels Karpenter and EKS Auto Mode refuse in a NodePool (part of policy)
    cel       the upstream CRDs' CEL rules (x-kubernetes-validations) on rendered custom resources
    prerequisites  what one object needs another for, over one flavour's whole set (ingress class, ...)
    cli       python -m helpers.infra.manifests render --target eks --out build/manifests | check
"""

from __future__ import annotations

from helpers.infra.manifests.objects import (  # noqa: F401 - the public surface of the package
    AWS_TAG,
    COMMON_LABELS,
    DEFAULT_FLAVOUR,
    FLAVOURS,
    Finding,
    KUBERNETES_VERSION,
    MANIFESTS_DIR,
    Manifest,
    ON_DEMAND_DIR,
    PART_OF,
    PART_OF_LABEL,
    POD_TEMPLATE_PATHS,
    SCHEMAS_DIR,
    TARGETS,
    as_docs,
    find,
    load_documents,
    object_ref,
    pod_specs,
    pod_templates,
)
from helpers.infra.manifests.render import (  # noqa: F401 - the public surface of the package
    KIND_ORDER,
    chapter_parameters,
    chapters,
    deep_merge,
    default_flavour,
    instance_label,
    kind_rank,
    render,
    render_chapter,
    render_context,
    render_object_text,
    render_text,
    placeholders,
    sort_for_apply,
    templates,
    write,
)
from helpers.infra.manifests.validate import (  # noqa: F401 - the public surface of the package
    custom_schemas,
    validate,
    validate_document,
)
from helpers.infra.manifests.policy import (  # noqa: F401 - the public surface of the package
    ACCELERATOR_TAINTS,
    SECRET_NAME_PARTS,
    check,
    findings_table,
    image_tag,
    looks_secret,
    policy,
    policy_document,
    tolerates,
)
from helpers.infra.manifests.prerequisites import (  # noqa: F401 - the public surface of the package
    CALLS_AWS_LABEL,
    prerequisites,
    provided_ingress_classes,
)
