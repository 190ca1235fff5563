"""A simulated sensor feed and command traffic for local runs and demonstrations."""
