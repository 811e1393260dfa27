"""The foundation every other layer may use: errors, reports, options, stages, the kernel contract
and the host VM. It imports nothing else of shiftc."""
