"""Management REST API (and, later, the WebSocket) for the UI and CLI."""
