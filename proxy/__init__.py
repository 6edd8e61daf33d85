"""Data plane: the reverse proxy that buckets, blinds and records experimented requests."""
