"""The built-in contexts: segmentation-models-pytorch's ``Unet`` with scSE attention in its decoder.

``smp.Unet("resnet34", encoder_weights=None, decoder_attention_type="scse")``: ten ``SCSEModule``s
(two per decoder block, on 16 to 768 channels), reduction 16 with biases, nothing downloaded.
Three forms of it: ``unet`` (eager), ``unet_compiled`` (``torch.compile`` of the whole network) and
``unet_graphed`` (the whole forward in one CUDA graph).

smp is an optional extra (``pip install 'scse-harness[unet]'``): without it these contexts say why
they are unavailable, and nothing here imports it before a network is built.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util

import torch
import torch.nn as nn

from variants.contexts import Context, add_context
from variants.reference import ScSE
from variants.smp import SMP_TO_REFERENCE, to_reference_state_dict

ENCODER = "resnet34"
#: smp's own default reduction for ``SCSEModule``.
REDUCTION = 16


def smp_unavailable() -> str | None:
    """Why segmentation_models_pytorch can't be imported here, or None."""
    try:
        importlib.import_module("segmentation_models_pytorch")
    except Exception as exc:  # an ImportError, or torchvision failing to load against this torch
        first = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if importlib.util.find_spec("segmentation_models_pytorch") is None:
            keep = f"torch=={torch.__version__.split('+')[0]}"  # the constraint keeps this torch
            return f"needs segmentation-models-pytorch: pip install -c <(echo {keep}) 'scse-harness[unet]' ({first})"
        if importlib.util.find_spec("torchvision") is None:
            return (f"segmentation-models-pytorch is installed but torchvision is not: install the torchvision "
                    f"built for torch {torch.__version__} ({first})")
        if "torchvision" in first:  # the registry's torchvision is built for another torch
            return (f"segmentation-models-pytorch is installed, but torchvision {_version('torchvision')} does not "
                    f"load beside torch {torch.__version__}: install the torchvision built for this torch ({first})")
        return f"segmentation-models-pytorch is installed but does not import: {first}"
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _scse_class() -> type[nn.Module]:
    return importlib.import_module("segmentation_models_pytorch.base.modules").SCSEModule


def is_scse(module: nn.Module) -> bool:
    """smp's own ``SCSEModule`` (never a variant swapped in for one)."""
    return isinstance(module, _scse_class())


def build_unet() -> nn.Module:
    """The unmodified network, float32 on the CPU, randomly initialised."""
    smp = importlib.import_module("segmentation_models_pytorch")
    return smp.Unet(ENCODER, encoder_weights=None, decoder_attention_type="scse", in_channels=3, classes=1)


def scse_reference(block: nn.Module) -> ScSE:
    """smp's ``SCSEModule`` as ``ScSE(C, 16, "add", bias=True)`` with its weights."""
    channels = block.sSE[0].in_channels
    reference = ScSE(channels, reduction=REDUCTION, fusion="add", bias=True)
    reference.load_state_dict(to_reference_state_dict(dict(block.state_dict())), strict=True)
    return reference.eval()


UNET = Context(
    name="unet",
    description=f"segmentation-models-pytorch Unet ({ENCODER} encoder, random weights) with 10 decoder scSE blocks",
    build=build_unet,
    is_block=is_scse,
    to_reference=scse_reference,
    block_names=SMP_TO_REFERENCE,
    reduction=REDUCTION,
    available=smp_unavailable,
    size_multiple=32,
)
add_context(UNET)
add_context(dataclasses.replace(UNET, name="unet_compiled", form="compile", network="unet",
                                description="unet, the whole swapped network under torch.compile"))
add_context(dataclasses.replace(UNET, name="unet_graphed", form="graph", network="unet", devices=frozenset(("cuda",)),
                                modes=frozenset(("forward",)),
                                description="unet, the whole swapped network's forward captured in one CUDA graph"))
