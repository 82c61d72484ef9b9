"""The platform's infrastructure: manifests, Kubernetes, AWS, scheduling and cost, teardown."""
