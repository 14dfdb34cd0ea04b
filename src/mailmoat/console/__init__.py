"""The Domain Console: server-rendered pages for domain admins, entered by login links."""
