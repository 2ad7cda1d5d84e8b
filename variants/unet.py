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

from variants.contexts import Context, HostPeak, add_context
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


#: A network's CPU case (``--context``) holds far more than its input: the network's activations, each
#: of its runs' (the swapped network, the unmodified one in float64 and in the case's dtype, the
#: blocks' own check) and, in train, their saved tensors and gradients; and its weights, several
#: times. Measured 2026-11-28 on the 2-core VM (glibc, 2 threads), smp's Unet (resnet34 encoder,
#: 24,550,360 parameters) with eager blocks, one ``run_case`` with the run's metrics in a fresh
#: process, VmHWM reset by /proc/self/clear_refs just before the case, above the RSS just before it;
#: glibc made steady (the CPU default: every tensor from its heap) and, in brackets, not; MiB:
#:   forward float32  1×3×128² 459 (461), 2×3×256² 891 (864), 4×3×256² 1393 (1281), 4×3×512² 4850
#:     (3424), 6×3×512² 6311; bfloat16 4×3×256² 1434 (1198), 4×3×512² 4759 (3461); float16 1×3×128²
#:     435 (399); float64 4×3×256² 1878 (1518)
#:   train   float32  1×3×128² 581 (562), 2×3×256² 1838 (1424), 4×3×256² 2996 (1917–1991), 4×3×512²
#:     8860 (6083); bfloat16 4×3×256² 2888 (1897), 4×3×512² 8160 (5980); float16 1×3×128² 554 (485);
#:     float64 4×3×256² 5072 (2462)
#: channels_last and smp blocks (4×3×256², not steady) within 4% of eager's; unet_compiled forward
#: 4×3×256² 1531 (1349), train 2×3×256² 1846 (1602): up to 180 MiB above eager's (its compiler).
#: Less the weights' copies (``HostPeak.WEIGHT_COPIES``: 468 MiB forward, 936 train), that is at most
#: 1461 B (forward) and 2747 B (train) per input element in float32 and 16 bits, 1880 and 5515 in
#: float64 (steady 4×256²). The figure, about 1.4× those: 2048 and 4096 B per element, twice that
#: in float64 (``harness.sweep.oom.FLOAT64_FACTOR``). Not steady the peaks are lower, so no heap
#: factor applies.
UNET_HOST_PEAK = HostPeak(parameters=24_550_360, per_element={"forward": 2048, "train": 4096})

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
    host_peak=UNET_HOST_PEAK,  # the compiled and graphed forms share it
)
add_context(UNET)
add_context(dataclasses.replace(UNET, name="unet_compiled", form="compile", network="unet",
                                description="unet, the whole swapped network under torch.compile"))
add_context(dataclasses.replace(UNET, name="unet_graphed", form="graph", network="unet", devices=frozenset(("cuda",)),
                                modes=frozenset(("forward",)),
                                description="unet, the whole swapped network's forward captured in one CUDA graph"))
