"""Label recovery from the shared gradient: iDLG for one image, the batch rules for B > 1
(idlg, yin, llg); the label modes of the attack (joint, idlg, given, yin, llg)."""

import pytest
import torch

from gradinv_exp import data, models
from gradinv_exp.attacks.labels import (
    LABELS,
    Evidence,
    count_labels,
    idlg_labels,
    last_linear_weight,
    yin_labels,
)
from gradinv_exp.base.streams import generator
from gradinv_exp.client import Client, FedAvgConfig, Simulator, gradient, share
from gradinv_exp.data import DatasetConfig


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


def test_yin_reads_distinct_labels_from_row_minima_on_real_models():
    images, _, _ = data.load(DatasetConfig(name="photos", index=0), 8)
    distinct = torch.tensor([3, 41, 7, 88, 12, 60, 99, 0])
    for name, activation in (("lenet", "sigmoid"), ("resnet18", "relu")):
        model, target = shared_gradient(name, images, distinct, 100, activation)
        found = yin_labels(target[last_linear_weight(model)], 8)[0]
        assert sorted(found.tolist()) == sorted(distinct.tolist())


def test_yin_takes_the_most_negative_row_minimum_not_the_row_sum():
    grad = torch.ones(1, 4, 3)  # (T, K, features)
    grad[0, 1] = torch.tensor([-5.0, 4.0, 4.0])  # minimum -5, sum +3: present (one image)
    grad[0, 2] = torch.tensor([-1.0, -1.0, -1.0])  # minimum -1, sum -3
    assert yin_labels(grad, 2).tolist() == [[1, 2]]
    assert idlg_labels(grad, 1).tolist() == [[2]]  # a sum rule would rank them the other way


def uniform_head(classes=10):
    """A convnet whose last layer is zero: every image predicts 1/K for every class."""
    model = models.build(
        "convnet", channels=3, num_classes=classes, image_size=16, activation="relu",
        init="default", generator=generator(0, "model"),
    )  # fmt: skip
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.zero_()
    return model


@pytest.mark.parametrize(
    "labels", [[0, 0, 0, 0, 0, 0, 1, 2], [4, 4, 9, 9, 9, 1, 1, 1], [3, 3, 3, 3, 3, 3, 3, 3]]
)
def test_llg_counts_repeated_labels_exactly_when_the_predictions_are_known(labels):
    images, _, _ = data.load(DatasetConfig(name="photos", index=0, image_size=16), 8)
    model = uniform_head()
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), 10).float()
    target = [g[None] for g in gradient(Client(model, images, onehot))]
    evidence = Evidence(model, target, 8, 10, None, generator(0, "a"), (3, 16, 16))
    found = LABELS["llg"].start(evidence, 1)[0].argmax(-1)
    assert sorted(found.tolist()) == sorted(labels)


def test_count_labels_rounds_estimated_counts_to_the_batch():
    offset = torch.full((5,), 0.2, dtype=torch.float64)  # uniform predictions, K = 5
    counts = torch.tensor([3, 0, 1, 0, 0])  # B = 4
    bias = offset - counts / 4  # s_k = pbar_k - n_k / B
    assert count_labels(bias[None], 4, offset, 1.0).tolist() == [[0, 0, 0, 2]]  # by count
    wrong = count_labels(bias[None], 4, offset, 4.0)  # a share 4x too big: too few repeats
    assert sorted(wrong[0].tolist()) != [0, 0, 0, 2]


@pytest.mark.parametrize("mode", ["yin", "llg"])
def test_gradient_label_modes_read_a_fedavg_update(mode):
    images, _, _ = data.load(DatasetConfig(name="photos", index=2, image_size=16), 4)
    model = uniform_head()
    labels = torch.tensor([5, 5, 2, 8]) if mode == "llg" else torch.tensor([5, 1, 2, 8])
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    cfg = FedAvgConfig(local_steps=1, local_lr=0.3)
    update = share(Client(model, images, onehot), cfg)
    shared = Simulator(model, cfg).as_gradient([u[None] for u in update])
    evidence = Evidence(model, shared, 4, 10, None, generator(0, "a"), (3, 16, 16))
    assert sorted(LABELS[mode].start(evidence, 1)[0].argmax(-1).tolist()) == sorted(labels.tolist())
