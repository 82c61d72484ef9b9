"""The local trace store's launcher (Arize Phoenix, its own venv)."""
