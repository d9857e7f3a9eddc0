"""A tuning trial's model is made as a train run's is (`training.run.compile_sasrec`)."""

import dataclasses

import keras_tuner
import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.run import build_model, item_probabilities
from tfrec_attn.tuning import SASRecHyperModel, SearchSpace

TRAIN = [np.array([2, 3, 4, 5]), np.array([3, 3, 6]), np.array([7, 2])]
VOCAB = 9


@pytest.mark.parametrize("blocks, learning_rate", [(1, 0.004), (2, 0.002)])
def test_trial_model_equals_the_train_runs_model(blocks, learning_rate):
    # The sampled loss: the one that uses the item probabilities (log-Q correction).
    space = SearchSpace({"dim": [8], "num_blocks": [blocks], "learning_rate": learning_rate,
                         "loss": "sampled"})
    hypermodel = SASRecHyperModel(VOCAB, space, base={"max_len": 5}, seed=3,
                                  item_probabilities=item_probabilities(TRAIN, VOCAB))
    trial = hypermodel.build(keras_tuner.HyperParameters())
    fields = {k: v for k, v in dataclasses.asdict(trial.config).items() if k != "vocab_size"}
    keras.backend.clear_session()
    keras.utils.set_random_seed(3)  # as the hypermodel does before each trial
    run = build_model(TrainOptions(learning_rate=learning_rate, model=fields), VOCAB, TRAIN)
    assert trial.config == run.config and trial.config.num_blocks == blocks
    assert type(trial.optimizer) is type(run.optimizer) is keras.optimizers.Adam
    assert trial.optimizer.learning_rate.numpy() == pytest.approx(learning_rate)
    assert run.optimizer.learning_rate.numpy() == pytest.approx(learning_rate)
    assert trial.jit_compile is run.jit_compile is False
    np.testing.assert_array_equal(trial.loss_fn._probabilities.numpy(),
                                  run.loss_fn._probabilities.numpy())
    history = np.array([[0, 0, 2, 3, 4]])
    np.testing.assert_allclose(trial(history).numpy(), run(history).numpy(), rtol=1e-6)


def test_a_bce_trial_drops_the_exclude_seen_the_data_chose():
    """The search's base takes `exclude_seen=True` from the data (as `train` does for the
    softmax losses); a trial sampling `loss: bce` failed on it ("exclude_seen applies to the
    softmax losses"), so a one-trial search could end with no scored trial. A user's own
    `exclude_seen` is still refused with bce."""
    space = SearchSpace({"loss": ["bce"]})
    base = {"max_len": 5, "exclude_seen": True}
    model = SASRecHyperModel(VOCAB, space, base=base, data_chosen=("exclude_seen",)).build(
        keras_tuner.HyperParameters())
    assert model.config.loss == "bce" and not model.config.exclude_seen
    with pytest.raises(ValueError, match="exclude_seen applies to the softmax losses"):
        SASRecHyperModel(VOCAB, space, base=base).build(keras_tuner.HyperParameters())
