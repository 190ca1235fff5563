"""The ingest service: authorised publishers POST SA events and directives over HTTP."""
