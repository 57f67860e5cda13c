"""loopml."""
