"""``ssl3d segment`` and ``ssl3d evaluate`` (registered here)."""
