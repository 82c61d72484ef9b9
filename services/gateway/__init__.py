"""Code the LiteLLM proxy loads from its config folder (its own venv)."""
