"""Typed identifiers, so that a key id is never passed where a batch id belongs."""

from typing import NewType

RecordId = NewType("RecordId", int)
KeyId = NewType("KeyId", int)
BatchId = NewType("BatchId", int)
LeaseToken = NewType("LeaseToken", int)
"""Fencing token of a key lease: increases on every lease of the same key."""
HolderId = NewType("HolderId", str)
"""Random identity of one signing execution; two deliveries of one task differ."""
