"""VTA-compatible accelerator backend, rebuilt from the published ISA and verified in simulation.

Modules: ``config`` (vta_config.json), ``isa`` (instruction encoding), ``simulator``
(functional + cycle-estimate model), ``layout``, ``geometry`` and ``codegen`` (QDense / QConv2d
lowering), ``stream`` (the instruction stream of one layer), ``rtl`` (yosys synthesis of
``rtl/*.v``) and ``resources`` (writes resources.json).  The NumPy truth of the layers is
``shiftc.reference.accelerator``.  See README.md.
"""
