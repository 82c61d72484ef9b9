"""AWS for the eks target: who the calls run as, quotas, instance shapes and prices, the Auto Mode cluster.

Offline, only the committed price table (`helpers/data/ec2_prices.csv`) is read. Every function that calls AWS
raises AwsUnavailable, with the fix, when there are no credentials or the call is refused, so a notebook can stop
with one clear message instead of a botocore traceback.

    account  identity, region, session/client, quotas
    prices   instance shapes and on-demand prices (the committed table; refreshed on eks)
    cluster  the EKS Auto Mode cluster: prerequisites, the create request, the AMI alias
    cli      python -m helpers.infra.aws identity | quotas | refresh-prices
"""

from __future__ import annotations

from helpers.infra.aws.account import (  # noqa: F401 - the public surface of the package
    AwsUnavailable,
    CREDENTIALS_FIX,
    Identity,
    QUOTAS,
    Quota,
    QuotaSpec,
    call,
    client,
    identity,
    quota,
    quota_for_category,
    quota_shortfalls,
    quotas,
    region,
    session,
    unavailable,
)
from helpers.infra.aws.prices import (  # noqa: F401 - the public surface of the package
    InstanceType,
    PRICE_TABLE,
    PRICING_API_REGION,
    describe_instance_types,
    load_instance_types,
    on_demand_prices,
    price_table_header,
    pricing_filters,
    refresh_price_table,
    save_instance_types,
)
from helpers.infra.aws.cluster import (  # noqa: F401 - the public surface of the package
    AUTO_MODE_CLUSTER_POLICIES,
    AUTO_MODE_CLUSTER_ROLE,
    AUTO_MODE_NODE_POLICIES,
    AUTO_MODE_NODE_ROLE,
    CLUSTER_PREREQUISITES,
    PRIVATE_SUBNET_TAG,
    auto_mode_node_role,
    cluster_request,
    create_cluster,
    find_private_subnets,
    missing_roles,
    recommended_al2023_alias,
)
