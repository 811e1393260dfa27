"""TE kernel definitions of shiftc's integer, shift and norm ops (the only place they are defined).
Each matches ``shiftc.reference`` bit for bit; passes emit them, schedules schedule them."""
