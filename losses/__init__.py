"""tripletlab: losses."""
