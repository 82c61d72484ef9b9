"""Create the agent's virtual key on the gateway (POST /key/generate) and store it in a Kubernetes Secret.

Runs once as the Job "litellm-agent-key" (on-demand/agent-key.yaml.j2), inside the cluster, so the key
never leaves it: it is written to the Secret and never printed. Re-running is safe: an existing Secret
is kept. Standard library only.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
GATEWAY = os.environ["GATEWAY_URL"]
SECRET = os.environ["STORE_AS"]  # the Secret to create
BODY = json.loads(os.environ["GENERATE_BODY"])


def call(url, body=None, headers=None, method=None, context=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read() or b"null")


def kube(path, body=None, method=None):
    token = open(f"{SA}/token").read()
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    url = f"https://kubernetes.default.svc{path}"
    return call(url, body, {"Authorization": "Bearer " + token}, method, context)


namespace = open(f"{SA}/namespace").read().strip()
try:
    kube(f"/api/v1/namespaces/{namespace}/secrets/{SECRET}")
    print(f"Secret {SECRET} already exists: keeping the agent's key.")
    sys.exit(0)
except urllib.error.HTTPError as error:
    if error.code != 404:
        raise

for _ in range(60):  # the gateway may still be starting
    try:
        call(f"{GATEWAY}/health/readiness")
        break
    except (urllib.error.URLError, OSError):
        time.sleep(5)
else:
    sys.exit(f"The gateway at {GATEWAY} did not become ready in 5 minutes.")

master = {"Authorization": "Bearer " + os.environ["LITELLM_MASTER_KEY"]}
answer = call(f"{GATEWAY}/key/generate", BODY, master, "POST")
secret = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/part-of": "llm-eks-workshop"}},
    "type": "Opaque",
    "stringData": {"LITELLM_API_KEY": answer["key"], "LITELLM_KEY_ALIAS": BODY["key_alias"]},
}
kube(f"/api/v1/namespaces/{namespace}/secrets", secret, "POST")
limits = ", ".join(f"{k}={BODY[k]}" for k in ("max_budget", "budget_duration", "rpm_limit", "tpm_limit"))
print(f"Created virtual key '{BODY['key_alias']}' ({limits}) for models {BODY['models']}; stored in Secret {SECRET}.")
