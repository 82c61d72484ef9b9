"""The workshop's two MCP servers: web search and a sandboxed filesystem (one image)."""
