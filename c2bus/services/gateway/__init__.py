"""The gateway: authenticated WebSocket fan-out of SA, directives and decisions to consoles."""
