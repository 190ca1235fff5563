"""The policy API: validate, publish, inspect, dry-run and shadow-run alignment policies."""
