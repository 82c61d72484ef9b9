"""Chapter 05: one trace per request (tracing), and Langfuse/metrics on EKS (deploy)."""
