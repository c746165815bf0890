"""The admin module: every operation an administrator performs, each audited in its transaction."""
