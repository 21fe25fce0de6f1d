"""The local backend: the lab's real servers as child processes on 127.0.0.1."""
