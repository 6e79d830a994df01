"""cryosr.core.superres."""
