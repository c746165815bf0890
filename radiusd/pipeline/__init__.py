"""Between the edge and the store: the threads and bounded queues that hand requests over.

The event loop must never wait for the store. Access-Requests that need live numbers wait in the
reservation batcher's queue; accounting records wait in the accounting writer's queue, and in
the spool (a local, fsync'ed journal) while the store cannot take them. Each queue is bounded and
shares itself fairly among NAS. What the store does with a batch or a group is radiusd.store's.
"""
