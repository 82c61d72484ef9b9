"""Teardown that touches only what the workshop created (chapter 10).

    plan     what would be deleted, in dependency order, from the rendered manifests, the Helm releases and
             the AWS resources; never anything unlabelled or in a protected namespace
    execute  perform a plan on the eks target (dry run by default); delete the tagged EKS cluster on request
    verify   prove nothing billable is left in the account
    local    stop the laptop stack and prove no process is left; remove caches and keys on request
"""

from __future__ import annotations

from helpers.infra.teardown.plan import (  # noqa: F401 - the public surface of the package
    AWS_API,
    AWS_KINDS,
    CHAPTER_ORDER,
    DELETE_ORDER,
    HELM_API,
    HELM_KINDS,
    IMAGE_PREFIX,
    PROTECTED_NAMESPACES,
    Step,
    TeardownPlan,
    WORKSHOP_NAMESPACES_EXTRA,
    aws_entries,
    chapter_rank,
    cloudformation_stacks,
    delete_rank,
    dry_run_rows,
    full_plan,
    has_workshop_tag,
    helm_entries,
    how,
    image_repositories,
    is_protected,
    plan,
    plan_entry,
    planned_kinds,
)
from helpers.infra.teardown.execute import (  # noqa: F401 - the public surface of the package
    delete_cluster,
    execute,
    execute_all,
)
from helpers.infra.teardown.verify import (  # noqa: F401 - the public surface of the package
    Leftover,
    Verification,
    leftover_clusters,
    leftover_domains,
    leftover_instances,
    leftover_load_balancers,
    leftover_repositories,
    leftover_stacks,
    leftover_volumes,
    verify_aws,
    workshop_namespaces,
    workshop_node_pools,
)
from helpers.infra.teardown import local  # noqa: F401 - teardown.local.stack_processes(), ...
