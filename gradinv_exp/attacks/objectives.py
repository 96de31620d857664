"""The attack's objectives and priors: two small registries of pure functions.

An objective compares the dummy's simulated share ``grads`` with the real one ``target``
(two equally long lists of tensors, one per parameter, any shapes) and returns a scalar
>= 0 that is 0 at a perfect match. A prior takes one problem's images ``(B, C, H, W)``
and returns a scalar penalty. The engine vmaps both over its problem axis, so they are
written for one problem. ``attack.objective`` names one objective, ``attack.priors``
maps prior names to weights.

Some priors need more than one problem's images: the BN-statistics prior (``bn``) runs
the attacked model on the dummies, the group prior (``group``) compares each restart
with the others of its trial. Their entry has ``build(scene)`` instead of ``fn``: given
the attack's ``Scene`` (the model, the number of restarts) it returns one function of
all N problems' images ``(N, B, C, H, W)`` -> ``(N,)``, which the engine calls as is.
An entry says whether it can run inside torch.compile (``compiles``; ``bn``'s forward
hooks cannot, so it makes the attack eager) and what it ``needs`` of the model (``bn``:
batch norm layers; a ConfigError before any job otherwise).

The user's own objective or prior is named like a registered one, as ``module:function``
(``attack.objective=my_objectives:weighted_l2``; a prior's key cannot hold a colon on
Hydra's command line, so there it is ``module.function``:
``'attack.priors={my_priors.smooth: 0.1}'``). It is the same kind of function; preflight
imports it, checks its signature and probes it as the engine calls it (``check``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import (
    ConfigError,
    Registry,
    check_signature,
    is_target,
    not_allowed,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

ObjectiveFn = Callable[[Sequence["Tensor"], Sequence["Tensor"]], "Tensor"]
PriorFn = Callable[["Tensor"], "Tensor"]  # one problem's images (B, C, H, W) -> scalar
BatchedPrior = Callable[["Tensor"], "Tensor"]  # all problems (N, B, C, H, W) -> (N,)


@dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn


@dataclass(frozen=True)
class Scene:
    """What a prior of all problems may look at: the attacked model (in eval mode; its
    own weights) and the restarts R (the N problems are restart-major, N = R x T)."""

    model: nn.Module
    restarts: int


@dataclass(frozen=True)
class Prior:
    """``fn``: one problem's prior, vmapped by the engine; or ``build(scene)``: the prior
    of all problems at once. ``compiles``: it may run inside torch.compile. ``needs``:
    what the model must have, as ``(test(model), what)``; None: any model. ``rowwise``:
    each problem's value depends on that problem alone (not on its trial's other
    restarts), so problems may leave the batch one by one."""

    name: str
    fn: PriorFn | None = None
    build: Callable[[Scene], BatchedPrior] | None = None
    compiles: bool = True
    needs: tuple[Callable[[nn.Module], bool], str] | None = None
    rowwise: bool = True

    def batched(self, scene: Scene) -> BatchedPrior:
        """The prior of all N problems, ``(N, B, C, H, W)`` -> ``(N,)``."""
        if self.build is not None:
            return self.build(scene)
        assert self.fn is not None
        return torch.func.vmap(self.fn)


OBJECTIVES: Registry[Objective] = Registry("attack.objective", plugin=Objective)
PRIORS: Registry[Prior] = Registry("attack.priors", plugin=Prior)


def objective(name: str) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """Register the decorated function as objective ``name``."""

    def register(fn: ObjectiveFn) -> ObjectiveFn:
        OBJECTIVES.add(Objective(name, fn))
        return fn

    return register


def prior(name: str) -> Callable[[PriorFn], PriorFn]:
    """Register the decorated function as prior ``name``."""

    def register(fn: PriorFn) -> PriorFn:
        PRIORS.add(Prior(name, fn))
        return fn

    return register


@objective("l2")
def l2_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """DLG's objective: sum over layers of the squared L2 distance, in [0, inf).

    ``mse_loss`` fuses difference and square (forward and backward): vmapped over 16
    trials it measured 22 vs 35 ms per closure against ``((g - t) ** 2).sum()``.
    """
    mse = torch.nn.functional.mse_loss
    return sum(mse(g, t, reduction="sum") for g, t in zip(grads, target, strict=True))


@objective("cosine")
def cosine_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """Inverting Gradients' objective: 1 - cosine of the full gradient vectors, in [0, 2].

    All layers count as one vector (not a mean of per-layer cosines), so the gradient's
    direction is matched and its scale, which a defense or the batch size changes, is not.
    """
    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm_g = torch.sqrt(sum((g**2).sum() for g in grads))
    norm_t = torch.sqrt(sum((t**2).sum() for t in target))
    return 1 - dot / (norm_g * norm_t).clamp_min(1e-12)


@prior("tv")
def total_variation(images: Tensor) -> Tensor:
    """Anisotropic TV as in Inverting Gradients: mean |dx| + mean |dy| over ``(B, C, H, W)``.

    Natural images are piecewise smooth; this prior pulls the reconstruction towards them.
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy


@prior("norm")
def image_norm(images: Tensor) -> Tensor:
    """GradInversion's image norm ||x||_2 over the batch ``(B, C, H, W)``, taken around
    mid-grey: the paper's images are normalised to mean 0, these are in [0, 1]. It keeps
    pixels from drifting to the box's corners."""
    return torch.linalg.vector_norm(images - 0.5)


def batch_norms(model: nn.Module) -> list[nn.Module]:
    """The model's batch norm layers (any dimension), in forward order."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def bn_statistics(scene: Scene) -> BatchedPrior:
    """GradInversion's BN prior (DeepInversion's feature statistics, Yin et al. 2020,
    2021): per problem, the sum over the model's batch norm layers of ||mu - mean||_2 +
    ||sigma^2 - var||_2, with mu, sigma^2 ``(C,)`` the per-channel mean and (biased)
    variance of the layer's input over the dummy batch and its spatial positions, and
    mean, var the layer's running statistics. 0 exactly when the dummy batch has the
    statistics the model was trained on.

    The model runs once on all N x B dummies (in eval mode every image is normalised
    alone, so one forward pass serves every problem); forward hooks collect the inputs.
    Hooks do not run inside torch.compile, so this prior makes the attack eager.
    """
    layers = batch_norms(scene.model)

    def fn(images: Tensor) -> Tensor:
        count, batch = images.shape[:2]
        inputs: list[Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in layers]
        try:
            scene.model(images.flatten(0, 1))
        finally:
            for hook in hooks:
                hook.remove()
        total = images.new_zeros(count)
        for layer, x in zip(layers, inputs, strict=True):
            x = x.reshape(count, batch, x.shape[1], -1)  # (N, B, C, positions)
            mean, var = x.mean((1, 3)), x.var((1, 3), unbiased=False)  # (N, C) each
            total = total + torch.linalg.vector_norm(mean - layer.running_mean, dim=-1)
            total = total + torch.linalg.vector_norm(var - layer.running_var, dim=-1)
        return total

    return fn


def group_consistency(scene: Scene) -> BatchedPrior:
    """GradInversion's group consistency: per problem, ||x - mean over its trial's
    restarts||_2 (images ``(N, B, C, H, W)``, restart-major), the mean held fixed (a
    consensus the restarts are pulled towards, not a term they move together). Label
    restoration gives every restart the same label order, so image i of one restart and
    image i of another aim at the same image. 0 with one restart."""

    def fn(images: Tensor) -> Tensor:
        groups = images.view(scene.restarts, -1, *images.shape[1:])
        centre = groups.mean(0, keepdim=True).detach()
        return torch.linalg.vector_norm((groups - centre).flatten(2), dim=-1).flatten()

    return fn


PRIORS.add(
    Prior(
        "bn",
        build=bn_statistics,
        compiles=False,
        needs=(lambda model: bool(batch_norms(model)), "batch norm layers"),
    )
)
PRIORS.add(Prior("group", build=group_consistency, rowwise=False))


def check_model(priors: Mapping[str, float], model: nn.Module, name: str) -> None:
    """ConfigError unless ``model`` (option ``name``) has what each prior with a weight > 0
    needs (``bn``: batch norm layers)."""
    for prior, weight in priors.items():
        needs = PRIORS[prior].needs
        if weight and needs is not None and not needs[0](model):
            why = f"it needs a model with {needs[1]} (model={name} has none); set it to 0"
            raise not_allowed(f"attack.priors.{prior}", weight, why)


# --- preflight for the user's own objective and priors -------------------------------


def check(objective: str, priors: Iterable[str], grads: Sequence[Tensor], images: Tensor) -> None:
    """Probe the user's objective and priors (registered ones are tested, not probed) as
    the engine calls them: vmapped over a problem axis of 2, each must give one finite
    number per problem with a gradient back to its input. ``grads`` is a probe client's
    gradient (one tensor per parameter), ``images`` its batch ``(B, C, H, W)``.

    Raises a one-line ConfigError naming the key, the function and the problem.
    """
    if is_target(objective):
        key, fn = "attack.objective", OBJECTIVES[objective].fn
        check_signature(key, objective, fn, "fn(grads, target)", list(grads), list(grads))
        dummy = [torch.stack([g, 0.5 * g]).requires_grad_(True) for g in grads]
        _probe(key, objective, fn, (dummy, [torch.stack([g, g]) for g in grads]), dummy)
    for name in priors:
        if is_target(name):
            key, fn = "attack.priors", PRIORS[name].fn
            assert fn is not None  # the user's priors are functions of one problem
            check_signature(key, name, fn, "fn(images)", images)
            dummy_images = torch.stack([images, 1 - images]).requires_grad_(True)
            _probe(key, name, fn, (dummy_images,), [dummy_images])


def _probe(
    key: str, name: str, fn: Callable[..., Tensor], args: tuple, wrt: Sequence[Tensor]
) -> None:
    """``vmap(fn)(*args)`` must be a finite ``(2,)`` tensor, differentiable in ``wrt``."""
    try:
        out = torch.func.vmap(fn)(*args)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape != (2,):
            what = f"shape {shape[1:]}" if shape else type(out).__name__
            raise not_allowed(key, name, f"it must return a scalar tensor, returned {what}")
        if not bool(torch.isfinite(out).all()):
            raise not_allowed(key, name, f"it returned {out.tolist()} on a probe (not finite)")
        if not out.requires_grad:
            raise not_allowed(key, name, "its result has no gradient (detached?)")
        torch.autograd.grad(out.sum(), list(wrt), allow_unused=True)
    except ConfigError:
        raise
    except Exception as err:  # anything the user's code raises on the probe, e.g. under vmap
        text = " ".join(str(err).split())
        raise not_allowed(key, name, f"on a probe it raised {type(err).__name__}: {text}") from err
