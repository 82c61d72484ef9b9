"""Programs that run alone, each in its own process, venv or container image (never imported by notebooks for plumbing)."""
