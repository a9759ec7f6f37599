"""Two-way Google Calendar synchronization.

``core`` and ``recurrence`` are pure: they decide, they never do I/O. Adapters for Google
and for the database live beside them and carry out the decisions.
"""
