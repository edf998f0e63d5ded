"""tripletlab: reports."""
