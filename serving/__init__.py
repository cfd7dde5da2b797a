"""Serving the platform to applications: the OpenAI-compatible HTTP API (serving.app), the MCP server
(serving.mcp_tools), API keys (serving.apikeys) and the rules both apply (serving.service). docs/serving.md."""
