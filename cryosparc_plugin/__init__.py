"""CryoSPARC adapter through cryosparc-tools (console script ``cryosr-cryosparc``)."""
