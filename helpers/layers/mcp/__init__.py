"""Chapter 07: the MCP servers' library side (local commands and URLs, the EKS side)."""
