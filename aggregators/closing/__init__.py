"""Window closing: the closer, its Redis state, snapshots, recompute and retention."""
