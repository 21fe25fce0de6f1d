"""chaoslab: the harness of a chaos and failover lab for PostgreSQL, Redis and HAProxy.

The lab brief (TP) builds the stack by hand and breaks it by hand; this package does
both as software so that every part of the brief becomes a repeatable scenario.
"""
