"""The RADIUS edge: sockets, dictionaries, NAS lookup, authenticators, dialects -> facts."""
