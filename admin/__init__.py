"""Control plane: the admin API, UI and operator commands."""
