"""`radiusd bench`: a RADIUS load generator for loopback benchmarks.

Packets are assembled from pre-encoded attribute blocks; per send only the Identifier, the
Request Authenticator, the PAP password and the Message-Authenticator are computed, so the
generator's own CPU stays small next to the server's. One process drives a window of
outstanding requests (or a target rate) over several UDP sockets.
"""
