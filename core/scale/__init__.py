"""cryosr.core.scale."""
