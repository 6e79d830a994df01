"""cryosr.core.simulate."""
