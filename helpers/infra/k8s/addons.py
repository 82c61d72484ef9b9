"""The self-managed Karpenter flavour's cluster add-ons: Karpenter itself, the EBS CSI driver and the AWS Load Balancer
Controller, as pinned Helm releases with the IAM each needs (EKS Pod Identity), and a check that a cluster has them.

EKS Auto Mode has all three built in (its own ebs.csi.eks.amazonaws.com driver, its own eks.amazonaws.com/alb load
balancing): they are installed for the `karpenter` flavour only. All three go into kube-system, as their guides
install them; teardown never touches kube-system (helpers.infra.teardown: a protected namespace), so they stay until
the cluster is deleted, which is also what deleting the volumes and load balancers of the workshop needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpers.errors import WorkshopError
from helpers.infra.k8s.releases import HelmRelease, Policy, PodIdentity, resources

ADDON_NAMESPACE = "kube-system"
EBS_CSI_DRIVER = "ebs.csi.aws.com"  # the self-managed EBS CSI driver (Auto Mode's is ebs.csi.eks.amazonaws.com)
AUTO_MODE_EBS_CSI_DRIVER = "ebs.csi.eks.amazonaws.com"
ALB_CONTROLLER = "ingress.k8s.aws/alb"  # IngressClass controller of the AWS Load Balancer Controller
AUTO_MODE_ALB_CONTROLLER = "eks.amazonaws.com/alb"  # ... and of Auto Mode's built-in load balancing
ALB_DEPLOYMENT = "aws-load-balancer-controller"
KARPENTER_GUIDE = ("https://raw.githubusercontent.com/aws/karpenter-provider-aws/v1.14.1/website/content/en/docs/"
                   "getting-started/getting-started-with-karpenter/cloudformation.yaml")
ALB_POLICY = ("https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v3.5.0/docs/install/"
              "iam_policy.json")  # at tag v3.5.0 (commit 11eb202c97e4ae2ee45e0658c4cde9a4b59f33d4), sha256 16f232c9...
ALB_POLICY_SHA256 = "16f232c9d9f79366fe949c4550ad517a202380058a9e48d45a4e215044a20a6a"

KARPENTER_IAM = PodIdentity(
    namespace=ADDON_NAMESPACE, service_account="karpenter", role="{cluster}-karpenter",
    policies=tuple(
        Policy(f"KarpenterController{part}Policy-{{cluster}}", KARPENTER_GUIDE, note)
        for part, note in (
            ("NodeLifecycle", "RunInstances, CreateFleet, CreateTags, TerminateInstances and DeleteLaunchTemplate on "
                              "resources tagged kubernetes.io/cluster/{cluster}=owned and karpenter.sh/nodepool only"),
            ("IAMIntegration", "iam:PassRole of the node role only; instance profiles created, tagged and deleted "
                               "only with this cluster's tags"),
            ("EKSIntegration", "eks:DescribeCluster on this cluster only (its endpoint)"),
            ("Interruption", "receive and delete messages of this cluster's interruption queue only"),
            ("ResourceDiscovery", 'ec2:Describe* (this region), pricing:GetProducts and iam:ListInstanceProfiles on '
                                  '"*": read-only calls with no resource-level permissions; public SSM parameters'),
            ("ZonalShift", 'arc-zonal-shift:GetManagedResource on "*", conditioned on this cluster\'s ARN'),
        )),
    created_by="Karpenter's getting-started guide: its CloudFormation stack (the six policies) and eksctl "
               "(iam.podIdentityAssociations, with the eks-pod-identity-agent add-on)",
)

EBS_CSI_IAM = PodIdentity(
    namespace=ADDON_NAMESPACE, service_account="ebs-csi-controller-sa", role="{cluster}-ebs-csi-driver",
    policies=(Policy("AmazonEBSCSIDriverPolicy", "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy",
                     "AWS managed: create, attach, modify and delete only volumes and snapshots the driver tagged "
                     "(ebs.csi.aws.com/cluster=true, CSIVolumeName); ec2:Describe* on \"*\" because EC2's Describe "
                     "calls have no resource-level permissions"),),
    created_by="you (or eksctl): a role trusted by pods.eks.amazonaws.com with this policy, then the association",
)

ALB_IAM = PodIdentity(
    namespace=ADDON_NAMESPACE, service_account="aws-load-balancer-controller",
    role="{cluster}-aws-load-balancer-controller",
    policies=(Policy("AWSLoadBalancerControllerIAMPolicy", ALB_POLICY,
                     "the controller's upstream document at the chart's version (sha256 " + ALB_POLICY_SHA256[:12] +
                     "...). Resource \"*\": the ec2/elasticloadbalancing Describe and Get calls (no resource-level "
                     "permissions); creates and changes of load balancers, target groups and their tags are "
                     "conditioned on the elbv2.k8s.aws/cluster tag. Unconditioned: security-group ingress on the "
                     "cluster's existing groups (not created, so not tagged, by the controller), listeners and rules "
                     "(created before they can carry a tag). The WAF, Shield and Cognito statement serves annotations "
                     "the workshop never sets: drop it for least privilege."),),
    created_by="you (or eksctl): a customer-managed policy from the document, a role trusted by "
               "pods.eks.amazonaws.com, then the association",
)


def karpenter_release(cluster_name: str) -> HelmRelease:
    """Karpenter itself, as its getting-started guide installs it (namespace, values, IAM binding)."""
    return HelmRelease(
        name="karpenter",
        chart="oci://public.ecr.aws/karpenter/karpenter",
        repo_url="",
        version="1.14.1",
        # kube-system, the getting-started guide's KARPENTER_NAMESPACE: there Karpenter's API calls get the
        # system-leader-election and workload-high API priority (FlowSchemas; another namespace needs its own), and
        # its Pod Identity association names this namespace. The chart writes into kube-system whatever the
        # namespace (Role/RoleBinding karpenter-dns), and teardown leaves kube-system alone (deleting the cluster
        # removes Karpenter); a cluster built by the guide already has this release, which this install upgrades.
        namespace=ADDON_NAMESPACE,
        purpose="launches the nodes the NodePools describe (Auto Mode runs it for you)",
        values={
            "settings": {"clusterName": cluster_name, "interruptionQueue": cluster_name},
            "controller": {"resources": resources("500m", "1Gi", "1", "1Gi")},
        },
        pods=(),  # two replicas on the cluster's managed node group (affinity: no karpenter.sh/nodepool label)
        iam=KARPENTER_IAM,
    )


def ebs_csi_release(region: str | None) -> HelmRelease:
    """The Amazon EBS CSI driver: chapter 01's gp3 StorageClass (provisioner ebs.csi.aws.com) needs it."""
    controller: dict[str, Any] = {"serviceAccount": {"name": EBS_CSI_IAM.service_account}}
    if region:
        controller["region"] = region  # no instance metadata needed (Karpenter's nodes allow one IMDS hop: the node's)
    return HelmRelease(
        name="aws-ebs-csi-driver",
        chart="aws-ebs-csi-driver/aws-ebs-csi-driver",
        repo_url="https://kubernetes-sigs.github.io/aws-ebs-csi-driver",
        version="2.64.0",
        namespace=ADDON_NAMESPACE,
        purpose="creates and attaches the EBS volumes of chapter 01's gp3 StorageClass (Auto Mode has its own)",
        values={
            "controller": controller,
            # the node plugin mounts volumes on every node, the tainted GPU, Inferentia and x86 pools included
            "node": {"tolerateAllTaints": True},
        },
        pods=(("ebs-csi-controller", "50m", "192Mi"),),  # per pod (2 replicas): the chart's requests, 6 containers
        iam=EBS_CSI_IAM,
    )


def load_balancer_controller_release(cluster_name: str, region: str | None, vpc_id: str | None,
                                      ingress_class: dict[str, str]) -> HelmRelease:
    """The AWS Load Balancer Controller with its IngressClass `alb` (the class every Ingress of the workshop names)."""
    values: dict[str, Any] = {
        "clusterName": cluster_name,
        "serviceAccount": {"name": ALB_IAM.service_account},
        "resources": resources("50m", "128Mi", "200m", "256Mi"),
        "ingressClass": ingress_class["name"],
        "createIngressClassResource": True,  # IngressClass alb -> controller ingress.k8s.aws/alb
        # the same scheme as Auto Mode's IngressClassParams (chapter 01's ingress_class): internal ALBs only
        "ingressClassParams": {"spec": {"scheme": ingress_class["scheme"]}},
        "keepTLSSecret": True,  # reuse the webhook's certificate on upgrade instead of a new one each time
    }
    if region:
        values["region"] = region  # region and VPC from the values, not from instance metadata (one hop only)
    if vpc_id:
        values["vpcId"] = vpc_id
    return HelmRelease(
        name="aws-load-balancer-controller",
        chart="eks/aws-load-balancer-controller",
        repo_url="https://aws.github.io/eks-charts",
        version="3.5.0",
        namespace=ADDON_NAMESPACE,
        purpose="turns the Ingresses of chapters 04, 05 and 08 into ALBs (IngressClass alb; Auto Mode has its own)",
        values=values,
        pods=(("aws-load-balancer-controller", "50m", "128Mi"),),  # per pod (2 replicas)
        iam=ALB_IAM,
    )


# ---------------------------------------------------------------- what a cluster has


@dataclass(frozen=True)
class AddonCheck:
    """One add-on a flavour needs on the cluster: what was expected, what was found, and the fix when missing."""

    addon: str
    expects: str
    found: str
    ok: bool
    fix: str


def _found(call: Any, *args: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return call(*args)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def addon_checks(flavour: str, storage: Any = None, networking: Any = None, apps: Any = None) -> list[AddonCheck]:
    """Look on the cluster for the storage driver and the ALB ingress class (and controller) the flavour needs.

    The API clients default to the kubeconfig's (StorageV1Api, NetworkingV1Api, AppsV1Api); tests pass fakes."""
    from kubernetes import client

    storage, networking = storage or client.StorageV1Api(), networking or client.NetworkingV1Api()
    auto = flavour == "auto-mode"
    driver = AUTO_MODE_EBS_CSI_DRIVER if auto else EBS_CSI_DRIVER
    controller = AUTO_MODE_ALB_CONTROLLER if auto else ALB_CONTROLLER
    install = "install the operators of notebook 01 (k8s.install_operators(k8s.operator_releases('karpenter', ...)))"
    has_driver = _found(storage.read_csi_driver, driver) is not None
    checks = [AddonCheck(
        "EBS CSI driver", f"CSIDriver {driver}", "present" if has_driver else "missing", has_driver,
        "Auto Mode provides it: check the cluster was created with storageConfig.blockStorage.enabled" if auto
        else f"{install}: release aws-ebs-csi-driver, with the IAM role of AmazonEBSCSIDriverPolicy bound to "
             f"kube-system/{EBS_CSI_IAM.service_account} (Pod Identity)")]
    klass = _found(networking.read_ingress_class, "alb")
    got = getattr(getattr(klass, "spec", None), "controller", None)
    checks.append(AddonCheck(
        "ALB ingress class", f"IngressClass alb with controller {controller}",
        f"controller {got}" if klass else "missing", got == controller,
        "apply chapter 01's manifests (ingressclass.yaml.j2 renders it for Auto Mode)" if auto
        else f"{install}: release aws-load-balancer-controller (createIngressClassResource)"))
    if not auto:
        apps = apps or client.AppsV1Api()
        deployment = _found(apps.read_namespaced_deployment, ALB_DEPLOYMENT, ADDON_NAMESPACE)
        ready = (getattr(getattr(deployment, "status", None), "available_replicas", None) or 0) if deployment else 0
        checks.append(AddonCheck(
            "AWS Load Balancer Controller", f"Deployment {ADDON_NAMESPACE}/{ALB_DEPLOYMENT} available",
            f"{ready} available replica(s)" if deployment else "missing", ready > 0,
            f"{install}: release aws-load-balancer-controller, with the role of {ALB_IAM.policies[0].name} bound to "
            f"kube-system/{ALB_IAM.service_account}; if it is installed but not available: "
            f"kubectl -n {ADDON_NAMESPACE} describe deployment {ALB_DEPLOYMENT}"))
    return checks


def require_addons(flavour: str, **clients: Any) -> list[AddonCheck]:
    """The checks, or a WorkshopError naming every missing add-on with its fix."""
    checks = addon_checks(flavour, **clients)
    missing = [c for c in checks if not c.ok]
    if missing:
        raise WorkshopError(
            f"The {flavour} cluster lacks: " + "; ".join(f"{c.expects} ({c.found})" for c in missing) + ".",
            " / ".join(c.fix for c in missing))
    return checks
