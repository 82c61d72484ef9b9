"""Chapter 02: vLLM on GPUs (GPU memory planner, the cluster side) and the serving benchmark."""
