"""etcd: the store, the key layout, presence records, and the local etcd server."""
