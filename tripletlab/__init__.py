"""tripletlab: tripletlab."""
