"""One package per hop of the request path, each with its eks side in deploy.py."""
