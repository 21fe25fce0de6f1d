"""The system under test: a small products API over PostgreSQL (primary + replica) and Redis.

Run it with ``uvicorn --factory service.app:create_app``; every setting comes from the
environment (see ``service.settings``).
"""
