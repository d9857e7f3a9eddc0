"""fit_transition_prior chooses the mixing weight on validation; a train run records it,
and evaluate / the export reproduce the run's test figures with it."""

import json

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.evaluation import CooccurrenceRecommender, evaluate
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training.run_dir import load_run
from tfrec_attn.training.run_evaluation import run_scorers
from tfrec_attn.training.scoring import make_score_fn
from tfrec_attn.training.transition_prior import MIXES, fit_transition_prior

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len
TINY = ["--format", "synthetic", "--synthetic-users", "150", "--synthetic-items", "60",
        "--synthetic-length", "12", "--max-len", "10", "--dim", "16", "--blocks", "1",
        "--verbose", "0", "--patience", "2", "--epochs", "2"]


def _with_prior(tiny_sasrec, neighbors=8):
    model = SASRec(SASRecConfig(**{**tiny_sasrec.config.to_dict(),
                                   "transition_neighbors": neighbors}))
    model(tf.zeros((1, MAX_LEN), tf.int64))
    model.encoder.set_weights(tiny_sasrec.encoder.get_weights())
    return model


@pytest.fixture(scope="module")
def chosen(chain_sequences, tiny_sasrec):
    sequences, _ = chain_sequences
    model = _with_prior(tiny_sasrec)
    train = [s[:-2] for s in sequences]
    histories, targets = train, np.array([s[-2] for s in sequences])
    report = fit_transition_prior(model, train, histories, targets)
    return model, report, histories, targets, train


def test_the_weight_with_the_best_validation_ndcg_is_set(chosen):
    model, report, histories, targets, _ = chosen
    valid = {float(m): v for m, v in report["valid"].items()}
    assert sorted(valid) == list(MIXES) and report["neighbors"] == 8
    assert report["mix"] == max(valid, key=valid.get)
    assert float(model.transition_prior.mix.numpy()) == pytest.approx(report["mix"])
    # the reported figure is the model's own validation NDCG@10 with that weight
    again = evaluate(make_score_fn(model.scorer, MAX_LEN), histories, targets,
                     model.config.vocab_size, "full")
    assert again["ndcg@10"] == pytest.approx(report["valid"][str(report["mix"])], abs=1e-6)


def test_exact_transitions_help_a_weak_model_on_chain_data(chosen):
    """80% of `chain_sequences`' steps follow a fixed successor, which the counts hold
    exactly and a one-epoch model does not: the prior is switched on and lifts validation."""
    _, report, *_ = chosen
    assert report["mix"] > 0
    assert report["valid"][str(report["mix"])] > report["valid"]["0.0"] + 0.02


def test_the_table_is_the_baselines(chosen, chain_sequences):
    model, *_, train = chosen
    _, vocab = chain_sequences
    ids, weights = CooccurrenceRecommender(vocab).fit(train).neighbor_table(8)
    got_ids, got_weights = model.transition_prior.table()
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_weights, weights, atol=2.0 ** -25)


def test_sampled_protocol_and_refusals(tiny_sasrec, chain_sequences):
    sequences, _ = chain_sequences
    train = [s[:-2] for s in sequences]
    targets = np.array([s[-2] for s in sequences])
    model = _with_prior(tiny_sasrec)
    report = fit_transition_prior(model, train, train, targets, protocol="sampled-20",
                                  mixes=(0.0, 0.5))
    assert set(report["valid"]) == {"0.0", "0.5"}
    with pytest.raises(ValueError, match="no transition prior"):
        fit_transition_prior(tiny_sasrec, train, train, targets)
    with pytest.raises(ValueError, match="0 validation targets"):
        fit_transition_prior(model, train, [], np.array([], np.int64))
    with pytest.raises(ValueError, match=r"mixes must be weights in \[0, 1\)"):
        fit_transition_prior(model, train, train, targets, mixes=(0.0, 1.0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior_run")
    argv = TINY + ["--output", str(root / "out"), "--export-root", str(root / "models"),
                   "--name", "tiny"]
    assert train_pipeline.main(argv) == 0
    return root


def test_run_records_the_prior_and_tests_with_it(run):
    metrics = json.loads((run / "out" / "metrics.json").read_text())
    prior = metrics["transition_prior"]
    assert metrics["model"]["transition_neighbors"] == prior["neighbors"] == 50
    assert str(prior["mix"]) in prior["valid"] and len(prior["valid"]) == len(MIXES)
    assert {"ndcg@10", "hr@10"} <= set(prior["test_without_prior"])
    # the reloaded run (table and weight from the checkpoint) scores the test users as train did
    loaded = load_run(run / "out")
    assert float(loaded.model.transition_prior.mix.numpy()) == pytest.approx(prior["mix"])
    split = loaded.split
    again = evaluate(run_scorers(loaded)["model"], split.test_histories, split.test_targets,
                     loaded.vocab_size, "full")
    assert again["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)


def test_run_without_prior(tmp_path):
    argv = TINY + ["--transition-neighbors", "0", "--output", str(tmp_path / "out"),
                   "--export-root", ""]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "transition_prior" not in metrics and metrics["model"]["transition_neighbors"] == 0


def test_results_table_shows_the_model_without_its_prior(run):
    from tfrec_attn.training.run import results_table

    metrics = json.loads((run / "out" / "metrics.json").read_text())
    lines = results_table(metrics).splitlines()
    alone = next(line for line in lines if line.startswith("model, no prior"))
    assert f"{metrics['transition_prior']['test_without_prior']['ndcg@10']:.4f}" in alone


# -- the EASE item-item term (BENCHMARKS 3p) -------------------------------------------------------
def test_fit_item_item_chooses_l2_and_scale_on_validation(chain_sequences, tiny_sasrec):
    from tfrec_attn.training.transition_prior import fit_item_item

    sequences, _ = chain_sequences
    model = SASRec(SASRecConfig(**{**tiny_sasrec.config.to_dict(), "transition_neighbors": 8,
                                   "item_item_neighbors": 6}))
    model(tf.zeros((1, MAX_LEN), tf.int64))
    model.encoder.set_weights(tiny_sasrec.encoder.get_weights())
    train = [s[:-2] for s in sequences]
    histories, targets = train, np.array([s[-2] for s in sequences])
    fit_transition_prior(model, train, histories, targets)
    report = fit_item_item(model, train, histories, targets, l2s=(5.0, 50.0),
                           scales=(0.0, 1.0, 4.0))
    assert set(report["valid"]) == {f"{a:g}/{b:g}" for a in (5, 50) for b in (0, 1, 4)}
    best = max(report["valid"].values())
    assert report["valid"][f"{report['l2']:g}/{report['scale']:g}"] == best
    prior = model.transition_prior
    assert float(prior.item_item_scale.numpy()) == report["scale"]
    again = evaluate(make_score_fn(model.scorer, MAX_LEN), histories, targets,
                     model.config.vocab_size, "full")
    assert again["ndcg@10"] == pytest.approx(best, abs=1e-6)  # the model as left scores it
    with pytest.raises(ValueError, match="no item-item table"):
        fit_item_item(_with_prior(tiny_sasrec), train, histories, targets)


def test_item_item_needs_the_transition_prior():
    with pytest.raises(ValueError, match="item_item_neighbors > 0 needs transition_neighbors"):
        SASRecConfig(vocab_size=10, item_item_neighbors=5)


def test_run_records_the_item_item_term_and_reloads_it(run):
    metrics = json.loads((run / "out" / "metrics.json").read_text())
    term = metrics["transition_prior"]["item_item"]
    assert metrics["model"]["item_item_neighbors"] == term["neighbors"] == 200
    assert len(term["valid"]) == 4 * 7 and term["scale"] in (0, 0.5, 1, 2, 4, 8, 16)
    loaded = load_run(run / "out")
    assert float(loaded.model.transition_prior.item_item_scale.numpy()) == term["scale"]


@pytest.mark.parametrize("flags, patch", [(["--item-item-neighbors", "0"], None),
                                          ([], 50)], ids=["flag", "large_catalogue"])
def test_run_without_the_item_item_term(tmp_path, monkeypatch, flags, patch):
    """Off with `--item-item-neighbors 0`, and by default above `ITEM_ITEM_MAX_ITEMS` items
    (the EASE inverse is items x items; patched down to 50 here: the data have 60)."""
    from tfrec_attn.training import run as run_module

    if patch:
        monkeypatch.setattr(run_module, "ITEM_ITEM_MAX_ITEMS", patch)
    argv = TINY + flags + ["--output", str(tmp_path / "out"), "--export-root", ""]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["model"]["item_item_neighbors"] == 0
    assert "item_item" not in metrics["transition_prior"]


def test_an_item_item_term_too_large_for_the_inverse_is_refused_before_training(
        tmp_path, monkeypatch, capsys):
    """Asked for on a catalogue above `ITEM_ITEM_LIMIT` items (patched down to 50: the data
    have 60), the items x items inverse would not fit: a usage error before any training."""
    from tfrec_attn.training import run as run_module

    monkeypatch.setattr(run_module, "ITEM_ITEM_LIMIT", 50)
    argv = TINY + ["--item-item-neighbors", "20", "--output", str(tmp_path / "out"),
                   "--export-root", ""]
    assert train_pipeline.main(argv) == 2
    assert "--item-item-neighbors needs EASE's items x items inverse, refused above 50" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_item_item_neighbors_alone_is_a_valid_run_option():
    """The run's prior is on by default (50 successors), so `--item-item-neighbors 20` alone
    must pass the up-front check (it once met `SASRecConfig`'s library default of no prior)."""
    from tfrec_attn.training.run import TrainOptions, check_model_options

    check_model_options({"item_item_neighbors": 20})
    assert TrainOptions(model={"item_item_neighbors": 20}).model["item_item_neighbors"] == 20
    with pytest.raises(ValueError, match="needs transition_neighbors > 0"):
        check_model_options({"item_item_neighbors": 20, "transition_neighbors": 0})
