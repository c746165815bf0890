"""The store: loads what the core needs and writes what it decided (capacity, accounting, snapshot, partitions, secrets); every SQL text in `sql/`."""
