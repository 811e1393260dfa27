"""Pad a reduction's spatial extents up to whole tiles (for ``cpu``'s reduction rule).

A kernel whose innermost spatial extent no vector width divides (ViT token counts such as 197 or
257) used to run scalar: the reduction rule only splits by divisors. ``pad_to_tiles`` pads the
block's iteration domain with ``Schedule.pad_einsum`` -- inputs read through a zero-padded
producer, results written to a padded buffer and cropped by a copy block -- so the innermost axis
splits into whole vectors and the axis before it into a register tile. The padding only adds
rows/columns that are cropped away; the kept outputs are computed by the very same sums.
"""

from __future__ import annotations


def _padded(extent: int, multiple: int) -> int:
    return -(-extent // multiple) * multiple


def pad_to_tiles(sch, block, kinds: str, lanes: int) -> list:
    """Pad ``block`` (iterator kinds ``kinds``, 'S'/'R') so its innermost spatial extent is a
    multiple of ``lanes`` and the spatial extent before it a multiple of 4, where they are not
    already (nor small). Returns the padding producers to keep as their own loop (those padded along
    their innermost axis: inlined, they would put a lane-dependent bound check into the vector
    loop); None when it did not pad (a block that is no einsum, e.g. a conv reading
    ``x[h * stride + r]``, is left as it is)."""
    extents = [int(iv.dom.extent) for iv in sch.get(block).iter_vars]
    spatial = [i for i, k in enumerate(kinds) if k == "S"]
    if not spatial:
        return None
    factors = [1] * len(kinds)
    inner = spatial[-1]
    if extents[inner] > lanes and extents[inner] % (lanes // 2):
        factors[inner] = lanes
    if len(spatial) > 1:
        row = spatial[-2]
        if extents[row] > 4 and extents[row] % 2:
            factors[row] = 4
    if all(f == 1 for f in factors):
        return None
    try:
        sch.pad_einsum(block, factors)
    except Exception:  # noqa: BLE001 - not an einsum: schedule it unpadded
        return None
    return [b for b in sch.get_producers(block) if _pads_innermost(sch.get(b))]


def _pads_innermost(stmt) -> bool:
    """Whether a padding producer widens its buffer's innermost axis."""
    if not stmt.reads or not stmt.iter_vars:
        return False
    src = getattr(stmt.reads[0].source, "shape", None)
    return src is not None and int(src[-1]) != int(stmt.iter_vars[-1].dom.extent)
