"""The compose backend: the brief's docker-compose.yml, one compose project per run."""
