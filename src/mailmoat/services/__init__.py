"""Use cases shared by every front end (APIs, console, CLI, SMTP)."""
