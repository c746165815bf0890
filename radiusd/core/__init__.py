"""The decision core: identification, authorization and rating as pure functions over data.

No sockets, no sessions, no clock reads: `now` and every store-held number are arguments.
"""
