"""Lightning training modules that the domains subclass."""
