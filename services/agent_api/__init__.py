"""The supervisor agent's HTTP API (a program: run as `python -m services.agent_api`)."""
