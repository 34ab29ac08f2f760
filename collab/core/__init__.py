"""The core: rooms, sessions, the group-commit writer and history. No sockets here."""
