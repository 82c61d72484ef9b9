"""What runs on this machine: the supervised local stack and the preflight doctor."""
