"""Label recovery from the shared gradient: iDLG for one image, the batch rule for B > 1;
the label modes of the attack (joint, idlg, given)."""

import pytest
import torch

from gradinv_exp import data, models
from gradinv_exp.attacks.labels import LABELS, Evidence, idlg_labels, last_linear_weight
from gradinv_exp.client import Client, gradient
from gradinv_exp.config import DatasetConfig
from gradinv_exp.experiment import generator


def shared_gradient(model_name: str, images, labels, num_classes=100, activation="sigmoid"):
    model = models.build(
        model_name, channels=images.shape[1], num_classes=num_classes,
        image_size=images.shape[-1], activation=activation,
        init="uniform" if model_name.startswith("lenet") else "default",
        generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()
    return model, [g[None] for g in gradient(Client(model, images, onehot))]


@pytest.mark.parametrize("index", range(len(data.PHOTOS)))
def test_idlg_reads_the_true_label_of_every_bundled_photo_on_lenet(index):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=index), 1)
    model, target = shared_gradient("lenet", images, labels)
    assert idlg_labels(target[last_linear_weight(model)], 1).tolist() == [labels.tolist()]


@pytest.mark.parametrize(("model_name", "activation"), [("mlp", "relu"), ("convnet", "relu")])
def test_idlg_reads_the_label_on_other_models(model_name, activation):
    images, _, _ = data.load(DatasetConfig(name="photos", index=2), 1)
    for label in (0, 7, 99):
        model, target = shared_gradient(model_name, images, torch.tensor([label]), 100, activation)
        assert idlg_labels(target[last_linear_weight(model)], 1).tolist() == [[label]]


def test_batch_labels_are_the_negative_rows_and_duplicates_are_counted_by_magnitude():
    images, _, _ = data.load(DatasetConfig(name="photos", index=0), 4)
    distinct = torch.tensor([3, 41, 7, 88])
    model, target = shared_gradient("lenet", images, distinct)
    assert sorted(idlg_labels(target[last_linear_weight(model)], 4)[0].tolist()) == [3, 7, 41, 88]
    repeated = torch.tensor([5, 5, 5, 60])
    model, target = shared_gradient("lenet", images, repeated)
    assert sorted(idlg_labels(target[last_linear_weight(model)], 4)[0].tolist()) == [5, 5, 5, 60]


def test_idlg_labels_on_a_known_gradient_and_per_trial():
    grad = torch.ones(2, 5, 3)  # (T, K, features): every row positive ...
    grad[0, 2] = -1.0  # ... except class 2 in trial 0
    grad[1, 4] = -2.0  # and class 4 in trial 1
    assert idlg_labels(grad, 1).tolist() == [[2], [4]]


def test_last_linear_weight_skips_biases_and_convs():
    model = models.build(
        "lenet", channels=3, num_classes=10, image_size=32, activation="sigmoid",
        generator=generator(0, "model"),
    )  # fmt: skip
    params = list(model.parameters())
    assert params[last_linear_weight(model)].shape == (10, 768)


def test_label_modes_start_from_the_gradient_the_truth_or_noise():
    images, labels, _ = data.load(DatasetConfig(name="photos", index=3), 1)
    model, target = shared_gradient("lenet", images, labels)
    known = labels[None]  # (T, B) = (1, 1)
    evidence = Evidence(model, target, 1, 100, known, generator(0, "attack"))
    idlg = LABELS["idlg"].start(evidence, 2)  # two restarts share the recovered label
    assert idlg.shape == (2, 1, 100) and idlg.argmax(-1).tolist() == [labels.tolist()] * 2
    assert torch.equal(LABELS["given"].start(evidence, 2), idlg)
    joint = LABELS["joint"].start(evidence, 2)
    assert joint.shape == (2, 1, 100) and not torch.equal(joint[0], joint[1])
    assert LABELS["joint"].optimised and not LABELS["idlg"].optimised
    assert not LABELS["given"].optimised
    with pytest.raises(ValueError, match="needs the true labels"):
        LABELS["given"].start(Evidence(model, target, 1, 100, None, generator(0, "a")), 1)
