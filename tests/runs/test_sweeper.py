"""The default sweeper (``hydra/sweeper=composed``): Hydra's basic sweeper whose check of
every job before the launch goes through defaults composed once per set of choices."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import OmegaConf

from gradinv_exp import config
from gradinv_exp.runs import folder
from gradinv_exp.runs.sweeper import ComposedSweeper


@pytest.fixture
def sweeper(tmp_path):
    """A sweeper set up as Hydra sets it up for ``-m defense=noise ...``."""
    config.register()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        master = compose(
            "config",
            overrides=["defense=noise", f"hydra.sweep.dir={tmp_path}"],
            return_hydra_config=True,
        )
        found = ComposedSweeper(max_batch_size=None)
        found.config = master
        found.hydra_context = HydraContext(
            config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks()
        )
        yield found


def test_each_job_is_checked_with_the_defaults_composed_once_per_choice(sweeper):
    sweeper.validate_batch_is_legal(
        [["defense=noise", "defense.sigma=0.5", f"seed={s}"] for s in range(5)]
        + [["defense=prune", "defense.ratio=0.5"]]
    )
    assert len(sweeper.composer.composed) == 2  # noise, prune: not 6 compositions


def test_a_checked_job_equals_the_job_hydra_composes_whole(sweeper):
    job = ["defense=noise", "defense.sigma=0.5", "seed=7", "dataset.index=3"]
    fast = folder.task(sweeper.composer(job))
    whole = folder.task(sweeper.compose(job))
    assert OmegaConf.to_container(fast) == OmegaConf.to_container(whole)
    assert fast.defense.sigma == 0.5 and fast.seed == 7


@pytest.mark.parametrize(
    "job", [["defense=noise", "defense.sigm=0.5"], ["defense=noise", "seed=abc"]]
)
def test_a_job_hydra_refuses_fails_the_check_with_hydras_error(sweeper, job):
    with pytest.raises(HydraException, match="defense.sigm|seed"):
        sweeper.validate_batch_is_legal([["defense=noise", "seed=1"], job])
