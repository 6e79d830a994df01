"""cryosr.core.evaluate."""
