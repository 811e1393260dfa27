"""Relax -> Relax passes, one module each; ``shiftc.pipeline.STAGES`` orders their stages."""
