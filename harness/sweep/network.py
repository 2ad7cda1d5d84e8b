"""A case inside a network (``Case.context``): the context's network with every scSE block swapped.

The swapped network is checked against the unmodified one, which ``correctness.verify`` runs in
float64 and in the case's dtype: a network's own low-precision error (BatchNorm in eval mode lets
activations reach the hundreds) is far larger than a block's, so the swapped network is held to
what the unmodified network itself achieves in that dtype (compiled, for a compiled form), and in
float64 to 1e-10. In train mode
the input's gradient and every scSE parameter's are judged; the timed step differentiates every
parameter of the network, as a training step does.

That whole-network limit says little in 16-bit: the unmodified smp U-Net misses its own float64
output by 0.37 (bfloat16) and 0.09 (float16), so five times that passed blocks returning zeros. So
each block is judged too, where it sits (``blocks_check``): its output against the reference block
in float64 on the very input it received in the network, and in train mode its gradients for the
gradient that reached its output there, as a block alone is judged. An scSE parameter's gradient
that misses the whole network's limit is left to that check (``Trial.judged_where_they_sit``): one
run of the unmodified network is one draw of its rounding, too few for a cancelling sum.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn as nn

from harness.measure import correctness
from harness.measure.correctness import Check, Outcome, Trial, reference_named
from harness.sweep.cases import Case
from harness.sweep.subject import (
    PLAIN_FUNCTION,
    SharedInputs,
    Subject,
    case_seed,
    case_tensors,
    output_shape,
    trainable,
)
from variants.contexts import Context, get_context
from variants.registry import Variant
from variants.swap import Block, CompiledNetwork, Swapped, block_paths, swap_blocks
from variants.tags import tags_of


def make_network(context: Context, case: Case, seed: int) -> nn.Module:
    """The unmodified network, its weights drawn from the configuration's seed (the same for every
    variant and every form of the network), in train mode for a train case and eval mode otherwise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case_seed(case, seed))
        network = context.build().float()
    return network.train(case.mode == "train")


def named_as_original(swapped: Swapped, original: nn.Module, grads: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """The input's gradient and the scSE parameters', by the unmodified network's names and shapes;
    the other parameters' gradients are not judged (they follow from these)."""
    shapes = {name: p.shape for name, p in original.named_parameters()}
    out = {"input": grads["input"]} if "input" in grads else {}
    for name, grad in grads.items():
        own = swapped.original_name(name) if name != "input" else None
        if own is not None:
            same_size = own in shapes and grad.numel() == shapes[own].numel()
            out[own] = grad.reshape(shapes[own]) if same_size else grad
    return out


def blocks_check(context: Context, original: nn.Module, swapped: Swapped, x: torch.Tensor,
                 grad_out: torch.Tensor | None = None) -> Callable[[str], Check | None]:
    """The check of every swapped block where it sits: one pass of the swapped network as it is
    (not compiled or graphed: the blocks are the same modules) records each block's input and output
    and, in train mode (``grad_out``), the gradient that reaches the block's output. Each block is
    then judged against the reference block, built from the same weights, on that input and that
    gradient (``correctness.verify``, as a block alone: float64, and what the precision itself costs
    there): its output, and its input's and every parameter's gradient. The whole network's
    gradients say little in 16-bit (a block whose weights got no gradient passed at bfloat16, its
    error 1.0 under a limit of 3.96). A block the network never calls is excused."""
    train = grad_out is not None
    by_path = dict(zip(swapped.paths, swapped.blocks, strict=True))

    def check(compute: str) -> Check | None:
        given: dict[str, torch.Tensor] = {}
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        cotangents: dict[str, torch.Tensor] = {}
        carries: dict[str, bool] = {}

        def before(path: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple) -> None:
                given[path] = args[0].detach().clone()  # as it came in, to catch a block writing into it
            return hook

        def after(path: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                seen[path] = (args[0].detach().clone(), output.detach().clone())  # a graph's buffers are reused
                carries[path] = output.requires_grad
                if train and output.requires_grad:
                    output.register_hook(lambda g: cotangents.__setitem__(path, g.detach().clone()))
            return hook

        handles = []
        for path, block in by_path.items():
            handles += [block.register_forward_pre_hook(before(path)), block.register_forward_hook(after(path))]
        network = swapped.plain or swapped.network
        try:
            if train:
                xin = x.detach().requires_grad_(True)
                torch.autograd.grad(network(xin), xin, grad_out)  # fills cotangents, on the way to x
            else:
                with torch.no_grad():
                    plain_out = network(x.detach())
        finally:
            for handle in handles:
                handle.remove()
        if context.form == "graph" and not train:
            replayed = replay_check(swapped.network, x, plain_out, compute)
            if replayed is not None:
                return replayed
        for path, (now, output) in seen.items():
            ref = context.to_reference(original.get_submodule(path))
            cotangent = cotangents.get(path) if train else None
            if train and not carries[path]:  # its output left autograd's graph: nothing before it learns
                return Check(math.nan, None, math.nan, None, f"scSE block {path}: its output carries no gradient")
            # a block whose output feeds nothing the loss reads gets no gradient: its output alone is judged
            grads = block_gradients(by_path[path], now, cotangent, ref) if cotangent is not None else {}
            judged = tuple(n for n, p in ref.named_parameters() if p.requires_grad) if cotangent is not None else ()
            trial = Trial(ref, now, given[path], cotangent, judged=judged)
            found = correctness.verify(trial, Outcome(output, grads, 0.0), compute)
            if not found.passed:
                return replace(found, problem=f"scSE block {path}: {found.problem}")
        return None

    return check


def replay_check(graphed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plain: torch.Tensor,
                 compute: str) -> Check | None:
    """A CUDA graph replays the kernels of the network it captured, on the same input: its output
    must be the plain network's, within the precision's floor. The whole-network limit alone passed
    a replay returning zeros in 16-bit (error 1 under 1.83), and the blocks' check runs the plain
    modules, never the replay."""
    with torch.no_grad():
        replayed = graphed(x.detach()).clone()  # the graph's output buffer is reused
    err = correctness.normwise_error(replayed, plain)
    limit = correctness.tolerance(compute, x.device)
    if err <= limit:
        return None
    return Check(err, None, limit, None, f"the CUDA graph's replay differs from the network it captured: "
                                         f"error {err:.3g} > tolerance {limit:.3g}")


def block_gradients(block: object, x: torch.Tensor, cotangent: torch.Tensor, ref: nn.Module) -> dict[str, torch.Tensor]:
    """The block's gradients of its input and parameters (by the reference's names) for the
    ``cotangent`` at its output, given ``x`` again, as the network gave it."""
    xin = x.detach().clone().requires_grad_(True)
    params = trainable(block)
    with torch.enable_grad():
        values = torch.autograd.grad(block(xin), [xin, *params.values()], cotangent, allow_unused=True)  # type: ignore[operator]
    named = {n: g for n, g in zip(["input", *params], values, strict=True) if g is not None}
    return reference_named(block, named, ref)  # type: ignore[arg-type]


def network_subject(case: Case, variant: Variant, seed: int, inputs: SharedInputs | None) -> Subject:
    """The context's network, every scSE block the variant's, checked against the unmodified network."""
    context = get_context(case.context)
    train = case.mode == "train"
    original = make_network(context, case, seed)
    swapped = swap_blocks(context, original, variant, torch.device(case.device), getattr(torch, case.dtype), train)
    x, x_before, grad_out = case_tensors(case, seed, inputs, torch.contiguous_format)
    fn = swapped.network
    blocks = {path: original.get_submodule(path) for path in block_paths(context, original)}
    judged = tuple(f"{path}.{name}" for path, block in blocks.items() for name, p in block.named_parameters()
                   if p.requires_grad) if train else ()  # fmt: skip
    return Subject(
        fn, original, x, x_before, grad_out,
        params=trainable(fn) if train else {},
        checked=lambda grads: named_as_original(swapped, original, grads),
        compiles=context.form != "eager" or tags_of(variant).compiles,
        output_shape=output_shape(case),
        blocks=swapped.blocks,
        # compiled, the network's own low-precision error is its compiler's too (reductions reordered
        # and fused across layers): the unmodified network is compiled, as the swapped one, to show it
        seed_form=CompiledNetwork if context.form == "compile" else None,
        judged=judged,
        judged_where_they_sit=judged,  # block by block, below: the network's one run says too little
        untrainable=PLAIN_FUNCTION if train and any(isinstance(b, Block) for b in swapped.blocks) else None,
        parts_check=blocks_check(context, original, swapped, x, grad_out),
    )  # fmt: skip
