"""The one error type the harness raises for things a user can fix."""

from __future__ import annotations

from pathlib import Path


class LabError(RuntimeError):
    """A lab service did not do what was expected.

    The message always names the service, what was expected and where its log is,
    because that is what a student needs to fix a broken lab.
    """

    def __init__(self, service: str, expected: str, log: Path | str | None = None, cause: str | None = None):
        self.service = service
        self.expected = expected
        self.log = Path(log) if log else None
        parts = [f"{service}: expected {expected}"]
        if cause:
            parts.append(f"but {cause}")
        if self.log:
            parts.append(f"(log: {self.log})")
        super().__init__(" ".join(parts))
