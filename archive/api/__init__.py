"""HTTP edges of the owner's data rights: export and erasure."""
