"""eager again, under another name: a control whose every difference from eager is noise."""
from variants import register
from variants.registry import get_variant

_eager = get_variant("eager")


@register("eager_twin", "eager again, under another name", devices=_eager.devices, dtypes=_eager.dtypes,
          modes=_eager.modes, fusions=_eager.fusions)
def build(reference, device, dtype):
    return _eager.build(reference, device, dtype)
