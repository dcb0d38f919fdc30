"""The OpenAI-compatible gateway (port 2000)."""
