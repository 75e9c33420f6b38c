"""Settings split by environment: base holds what all share; dev, test and prod add to it."""
