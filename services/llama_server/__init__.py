"""llama-cpp-python's OpenAI-compatible server with the workshop's fixes (the stand-in for vLLM)."""
