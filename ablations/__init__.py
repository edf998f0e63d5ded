"""tripletlab: ablations."""
