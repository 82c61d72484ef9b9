#!/usr/bin/env bash
# Build and push the supervisor agent's image for linux/amd64 and linux/arm64 (run from anywhere).
#
#   manifests/08-supervisor-agent/image/build.sh <account>.dkr.ecr.<region>.amazonaws.com
#
# Environment:
#   TAG                  image tag (default: the tag in manifests/08-supervisor-agent/parameters.yaml); never `latest`
#   PYTHON_IMAGE_DIGEST  sha256 digest of the python:3.11.14-slim-trixie multi-arch index, to pin the base by digest
#                        (docker buildx imagetools inspect python:3.11.14-slim-trixie shows it)
#   PUSH=0               build only (load nothing, push nothing): a dry check that the image builds
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
registry="${1:?usage: build.sh <account>.dkr.ecr.<region>.amazonaws.com}"
tag="${TAG:-$(sed -n 's/^  tag: "\(.*\)".*/\1/p' "$root/manifests/08-supervisor-agent/parameters.yaml" | head -1)}"
if [[ -z "$tag" || "$tag" == "latest" ]]; then
  echo "error: set TAG to an exact version (not latest)" >&2
  exit 2
fi
base="python:3.11.14-slim-trixie"
if [[ -n "${PYTHON_IMAGE_DIGEST:-}" ]]; then
  base="${base}@${PYTHON_IMAGE_DIGEST}"
fi
output="--push"
if [[ "${PUSH:-1}" == "0" ]]; then
  output="--output=type=cacheonly"
fi
repository="llm-eks-workshop/supervisor-agent"
image="${registry}/${repository}:${tag}"
if [[ "${PUSH:-1}" != "0" ]]; then
  region="$(cut -d. -f4 <<<"$registry")"
  # created here only when build.sh runs on its own (notebook 08's instructions create it first, tagged the same);
  # notebook 10's teardown and its AWS check find it by its name prefix, llm-eks-workshop/
  aws ecr describe-repositories --repository-names "$repository" --region "$region" >/dev/null 2>&1 ||
    aws ecr create-repository --repository-name "$repository" --region "$region" \
      --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true \
      --tags Key=workshop,Value=llm-eks-workshop >/dev/null
fi
echo "building ${image} on ${base} for linux/amd64,linux/arm64"
docker buildx build --platform linux/amd64,linux/arm64 \
  --build-arg "PYTHON_IMAGE=${base}" \
  -f "$root/manifests/08-supervisor-agent/image/Dockerfile" \
  -t "$image" ${output} "$root"
