"""How the attack's objective-and-gradient function runs: compiled or eager, and with
which CPU convolution.

One DLG closure on the original notebook's LeNet is ~12 MFLOP: a few hundred microseconds of
arithmetic inside milliseconds of per-operation overhead. ``torch.compile`` (inductor)
fuses the forward, the per-problem gradients and the double backward into a few kernels.
For a single problem torch's native convolution beats oneDNN's on these tiny 12-channel
layers, while batched (vmapped) problems and wider models run faster on oneDNN (and
inductor cannot compile the vmapped native convolution in this torch). The
``auto`` choices below are fixed rules from measurements on this project's machines
(README, Performance), never timings taken at run time, so the same command computes the
same numbers.

Compiling costs ~45-60 s the first time and ~3 s once inductor's on-disk cache holds the
graph (``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``; a sweep's
jobs on one machine share it). A compilation that fails (no C compiler, an operation
inductor does not support) falls back to eager with one WARNING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradinv_exp.base import lazy

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

log = logging.getLogger(__name__)

# (variables (n, D), per-row data) -> losses (n,), their gradient (n, D)
ValueAndGrad = Callable[["Tensor", Any], tuple["Tensor", "Tensor"]]

MIN_CLOSURES = 1000  # compile when the attack evaluates at least this many closures


@dataclass(frozen=True)
class Backend:
    """``compile``: run the objective-and-gradient function through torch.compile.
    ``conv``: CPU convolutions by ``onednn`` or torch's ``native`` kernels."""

    compile: bool = False
    conv: str = "onednn"


def choose(
    compile: str, conv: str, *, model: str, device: str, problems: int, closures: int
) -> Backend:
    """The backend for an attack: ``compile`` and ``conv`` as configured (``on``/``off``,
    ``onednn``/``native``) or, for ``auto``, by the fixed rules: compile on the CPU for a
    model that ``compiles`` (its ``models.MODELS`` entry: the small models; resnet18 takes
    minutes and is left eager unless compile=on) when the attack evaluates at least
    ``MIN_CLOSURES`` closures (so the compile time pays off); native convolution for one
    eager problem (``problems`` = trials x restarts) on a model with ``native_conv`` (the
    LeNets' 12-channel convolutions), oneDNN otherwise. On CUDA ``auto`` stays eager (not
    measured yet) and the CPU convolution setting has no effect.

    Compiled, one LeNet problem runs 1.7x faster still with ``native`` (README,
    Performance), and its gradients are as accurate (1e-6 relative to float64, as
    oneDNN's); ``auto`` leaves that to ``conv_backend=native`` because float32 DLG is
    chaotic and on that rounding the default run's start (seed 0) falls into DLG's
    saturated-sigmoid failure (4.9 dB instead of 48 dB). Over 20 (image, model) pairs the
    two reconstruct equally often."""
    from gradinv_exp.models import MODELS  # torchvision: only once an attack runs

    facts = MODELS[model]
    if compile == "auto":
        compiled = device == "cpu" and facts.compiles and closures >= MIN_CLOSURES
    else:
        compiled = compile == "on"
    if conv == "auto":
        native = not compiled and problems == 1 and facts.native_conv
        conv = "native" if native else "onednn"
    return Backend(compiled, conv)


@contextmanager
def convolution(conv: str) -> Iterator[None]:
    """Run the block with oneDNN convolutions on (``onednn``) or off (``native``); the
    process-wide switch is restored afterwards."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = conv == "onednn"
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def value_and_grad(
    loss: Callable[[Tensor, Any], Tensor],
    *,
    compiled: bool,
    timings: dict[str, float],
    rows: int = 1,
) -> ValueAndGrad:
    """``f(variables (n, D), data) -> (losses (n,), d sum(losses) / d variables (n, D))``;
    ``data`` is what the loss reads per row (tensors with n rows first).

    Eager: autograd on a detached leaf. Compiled: ``torch.func.grad_and_value`` through
    ``torch.compile``; its first call compiles (the seconds go into ``timings["compile_s"]``)
    and, if compiling fails, the function falls back to eager for good with one WARNING
    (``timings["compile_failed"]`` = 1). A problem set of ``rows`` > 1 compiles with a
    symbolic row count, so rows that leave it (``engine.optimise``) cost no new compile;
    one problem alone keeps the static graph.
    """

    def eager(v: Tensor, data: Any) -> tuple[Tensor, Tensor]:
        leaf = v.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = loss(leaf, data)
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), grad

    if not compiled:
        return eager

    def summed(v: Tensor, data: Any) -> tuple[Tensor, Tensor]:
        losses = loss(v, data)
        return losses.sum(), losses

    graph = torch.compile(torch.func.grad_and_value(summed, has_aux=True), dynamic=rows > 1)
    state: dict[str, Any] = {"fn": None}

    def run(v: Tensor, data: Any) -> tuple[Tensor, Tensor]:
        if state["fn"] is None:
            start = time.perf_counter()
            try:
                grad, (_, losses) = graph(v.detach(), data)
                state["fn"] = graph
            except Exception as err:  # BackendCompilerFailed, Unsupported, missing compiler
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                log.warning("compile failed, running eager (%s: %s)", type(err).__name__, first)
                timings["compile_failed"] = 1.0
                state["fn"] = eager
                return eager(v, data)
            timings["compile_s"] = time.perf_counter() - start
            return losses.detach(), grad
        if state["fn"] is eager:
            return eager(v, data)
        grad, (_, losses) = graph(v.detach(), data)
        return losses.detach(), grad

    return run
