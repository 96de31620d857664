"""The attacker contract: every registered attack gets what the server observes and
controls, never the client's true images or labels (unless the threat model grants the
labels), and metrics.json names the threat model."""

import dataclasses
import json

import pytest
import torch
from helpers import typed_config

from gradinv_exp import experiment
from gradinv_exp.attacks import ATTACKS
from gradinv_exp.servers import SERVERS

TINY = ["dataset=photos", "dataset.image_size=16"]
OPTIMISED = ["attack.iterations=2", "attack.snapshot_every=1", "attack.checkpoint_every=1"]
CASES = {
    "dlg": ["attack=dlg", *OPTIMISED],
    "idlg": ["attack=idlg", "dataset.batch_size=2", *OPTIMISED],
    "ig": ["attack=ig", "trials=2", "attack.restarts=2", *OPTIMISED],
    "adaptive": ["attack=dlg", "defense=prune", "attack.adaptive=true", *OPTIMISED],
    "given": ["attack=idlg", "attack.labels=given", "dataset.batch_size=2", *OPTIMISED],
    "aggregate": ["attack=dlg", "clients=2", "client=fedavg", *OPTIMISED],
    "analytic": ["attack=analytic", "model=mlp", "dataset.batch_size=2"],
    "learned": ["attack=learned", "dataset.server_fraction=0.5", "attack.aux_images=4",
                "attack.updates=8", "attack.steps=2", "attack.width=8", "attack.features=8",
                "attack.cache_dir=null", "trials=2", "trials_vary=both"],
    "imprint": ["server=imprint", "attack=imprint", "dataset.batch_size=4", "server.bins=8",
                "server.public_images=2"],  # photos: 2 of 10 are the server's
}  # fmt: skip


def tensors(value, seen=None):
    """Every tensor reachable from ``value``: dataclass fields, mappings, sequences, a
    module's parameters and buffers."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item, seen)


def holds(tensor: torch.Tensor, truth: torch.Tensor) -> bool:
    """Whether ``tensor`` shares memory with ``truth`` or equals one of its items."""
    if tensor.untyped_storage().data_ptr() == truth.untyped_storage().data_ptr():
        return True
    items = truth.flatten(0, 1)  # (T*B, ...) one image or label each
    if truth.dtype.is_floating_point:
        if not tensor.is_floating_point() or tensor.shape[-items.dim() + 1 :] != items.shape[1:]:
            return False
        rows = tensor.detach().cpu().reshape(-1, *items.shape[1:])
        return any(torch.allclose(r.float(), i, atol=1e-6) for r in rows for i in items)
    return tensor.shape == truth.shape and torch.equal(tensor.cpu(), truth)


@pytest.mark.parametrize("case", list(CASES))
def test_no_attack_receives_the_clients_true_data(case, tmp_path, monkeypatch):
    truth, calls = {}, []
    load = experiment.load_data

    def spy_load(cfg):
        images, labels, source = load(cfg)
        truth["images"], truth["labels"] = images, labels
        return images, labels, source

    monkeypatch.setattr(experiment, "load_data", spy_load)
    for entry in list(ATTACKS):

        def spy(*args, _fn=entry.reconstruct):
            calls.append(args)
            return _fn(*args)

        monkeypatch.setitem(
            ATTACKS._entries, entry.name, dataclasses.replace(entry, reconstruct=spy)
        )

    cfg = typed_config(*TINY, *CASES[case])
    experiment.run(cfg, tmp_path)

    assert len(calls) == 1
    targets, context = calls[0]
    assert len(targets) == 1
    observed = targets[0].observed
    granted = ATTACKS[cfg.attack.family].labels_granted(cfg.attack)
    assert granted == (case == "given")
    for tensor in tensors(calls[0]):
        assert not holds(tensor, truth["images"]), f"a true image reached attack={case}"
        if tensor is not observed.labels:
            assert not holds(tensor, truth["labels"]), f"the true labels reached attack={case}"
    if granted:
        assert torch.equal(observed.labels.cpu(), truth["labels"])
    else:
        assert observed.labels is None
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["threat.labels_known"] is granted
    assert metrics["threat.server"] == cfg.server.name
    assert metrics["threat.malicious"] is SERVERS[cfg.server.name].malicious
    assert metrics["threat.clients"] == cfg.clients
    # the adaptive attacker models the defense; the learned one trains on its outputs
    assert metrics["threat.defense_modelled"] is (case in ("adaptive", "learned"))


def test_the_spy_sees_a_true_image_where_one_is_handed_over():
    """The check above is not blind: a true image, copied or kept, is found."""
    images = torch.rand(2, 3, 1, 4, 4)
    labels = torch.tensor([[1, 2, 0], [3, 1, 2]])
    leaked = {"x": [images[1, 2].clone() + 1e-8]}
    assert any(holds(t, images) for t in tensors(leaked))
    assert any(holds(t, labels) for t in tensors({"y": labels.clone()}))
    assert not any(holds(t, images) for t in tensors({"x": torch.rand(3, 1, 4, 4)}))


def test_every_registered_attack_has_a_preset_and_a_case_here():
    """A new attack family must be covered by the no-truth test above."""
    families = {typed_config(*TINY, *args).attack.family for args in CASES.values()}
    assert families == {entry.name for entry in ATTACKS}
