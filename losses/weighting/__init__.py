"""tripletlab: losses/weighting."""
