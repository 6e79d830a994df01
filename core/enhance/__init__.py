"""cryosr.core.enhance."""
