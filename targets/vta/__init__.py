"""VTA-compatible accelerator backend, rebuilt from the published ISA and verified in simulation.

Modules: ``config`` (vta_config.json), ``isa`` (instruction encoding), ``simulator``
(functional + cycle-estimate model), ``layout``, ``reference`` (NumPy reference of the
layers), ``codegen`` (QDense / QConv2d lowering), ``rtl`` (iverilog / verilator / yosys
runners for ``rtl/*.v``) and ``resources`` (writes resources.json).  See README.md.
"""
