import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.export import atomic_version_dir, existing_versions, export_saved_model, keep_latest

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len


@pytest.fixture(scope="module")
def trained(chain_sequences, tiny_sasrec):
    sequences, _ = chain_sequences
    return tiny_sasrec, pad_left([s[:-1] for s in sequences[:16]], MAX_LEN)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, _ = trained
    root = tmp_path_factory.mktemp("export")
    return export_saved_model(model, root, "sasrec", k=5), root


def test_layout_and_metadata(exported):
    path, root = exported
    assert path == root / "sasrec" / "1"
    assert (path / "saved_model.pb").exists() and (path / "variables").is_dir()
    info = json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())
    assert info["max_len"] == MAX_LEN and info["k"] == 5


def test_export_logs_no_unbuilt_layer_warnings(trained, tmp_path, caplog):
    """Every layer the module saves is built: TensorFlow warns "Skipping full serialization of
    TF-Keras layer ... because it is not built" otherwise (the score mask's `HistoryTopK`)."""
    model, _ = trained
    with caplog.at_level("WARNING", logger="tensorflow"):
        export_saved_model(model, tmp_path, "sasrec", k=5)
    assert "not built" not in caplog.text

def test_reloaded_signature_matches_keras_topk(trained, exported):
    model, history = trained
    path, _ = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = serve(history=tf.constant(history))
    want = model.topk_model(k=5)(tf.constant(history))
    np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), rtol=1e-5)
    for row, hist in zip(got["item_ids"].numpy(), history):
        assert not set(row) & set(hist[hist > 0])


def test_saved_topk_model_signature_has_the_exported_output_names(trained, exported, tmp_path):
    """`tf.saved_model.save(model.topk_model())` serves the outputs `export_saved_model`'s
    signature has (`item_ids`, `scores`), not the layer names `top_k` / `top_k_1`."""
    model, history = trained
    topk = model.topk_model(k=5)
    tf.saved_model.save(topk, str(tmp_path))
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    exported_serve = tf.saved_model.load(str(exported[0])).signatures["serving_default"]
    assert set(serve.structured_outputs) == set(exported_serve.structured_outputs) == {
        "item_ids", "scores"}
    got = serve(history=tf.constant(history))
    want = topk(tf.constant(history))
    np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), rtol=1e-6)


def test_rest_row_payload_through_signature(trained, exported):
    """TF Serving's REST row format: {"instances": [{"history": [...]}, ...]} -> same top-k."""
    _, history = trained
    path, _ = exported
    payload = json.loads(json.dumps({"instances": [{"history": row.tolist()} for row in history]}))
    batch = np.array([inst["history"] for inst in payload["instances"]], np.int64)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = serve(history=tf.constant(batch))["item_ids"].numpy()
    np.testing.assert_array_equal(got, serve(history=tf.constant(history))["item_ids"].numpy())


def test_out_of_range_ids_map_to_oov(trained, exported):
    model, history = trained
    path, _ = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    bad = history.copy()
    bad[:, 0] = 10**9
    fixed = history.copy()
    fixed[:, 0] = 1
    np.testing.assert_array_equal(serve(history=tf.constant(bad))["item_ids"].numpy(),
                                  serve(history=tf.constant(fixed))["item_ids"].numpy())



def test_history_longer_than_max_len_is_read_in_its_window_and_excluded_whole(trained, exported):
    """The encoder reads the last `max_len` ids; ids before them are excluded too, as offline
    evaluation excludes the whole history (they used to be recommended again)."""
    _, history = trained
    serve = tf.saved_model.load(str(exported[0])).signatures["serving_default"]
    window = serve(history=tf.constant(history))
    top = window["item_ids"].numpy()
    longer = np.concatenate([top[:, :2], history], axis=1)  # two top items, before the window
    assert longer.shape[1] == MAX_LEN + 2
    got = serve(history=tf.constant(longer))
    ids = got["item_ids"].numpy()
    assert not any(set(before) & set(row) for before, row in zip(top[:, :2], ids))
    np.testing.assert_array_equal(ids[:, :3], top[:, 2:])  # the same state, the same order
    np.testing.assert_allclose(got["scores"].numpy()[:, :3], window["scores"].numpy()[:, 2:],
                               rtol=1e-5)

def test_signature_specs(exported):
    """The names, dtypes and shapes TF Serving reads (the slow test below runs saved_model_cli)."""
    path, _ = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert {key: (spec.dtype, spec.shape.as_list()) for key, spec in specs.items()} == {
        "history": (tf.int64, [None, None])}
    assert {key: (spec.dtype, spec.shape.as_list())
            for key, spec in serve.structured_outputs.items()} == {
        "item_ids": (tf.int64, [None, 5]), "scores": (tf.float32, [None, 5])}


@pytest.mark.slow  # ~8 s: a subprocess importing TensorFlow; covered by test_signature_specs
def test_saved_model_cli_shows_signature(exported):
    path, _ = exported
    cli = shutil.which("saved_model_cli") or str(
        __import__("pathlib").Path(sys.executable).parent / "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True,
                         text=True, check=True, env={"TF_USE_LEGACY_KERAS": "1",
                                                     "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    assert "signature_def['serving_default']" in out
    assert "inputs['history']" in out and "outputs['item_ids']" in out


def test_versions_increment_and_keep_latest(trained, exported, tmp_path):
    model, _ = trained
    for version in ("1", "2"):  # copies of the module's export (saves two exports)
        shutil.copytree(exported[0], tmp_path / "m" / version)
    assert export_saved_model(model, tmp_path, "m", k=3).name == "3"
    assert existing_versions(tmp_path / "m") == [1, 2, 3]
    assert keep_latest(tmp_path / "m", 2) == [1]
    assert existing_versions(tmp_path / "m") == [2, 3]


def test_crash_mid_write_leaves_previous_version_newest(trained, exported, tmp_path,
                                                      monkeypatch):
    model, _ = trained
    shutil.copytree(exported[0], tmp_path / "m" / "1")  # version 1 (saves an export)
    real_save = tf.saved_model.save

    def crash(obj, export_dir, **kwargs):
        real_save(obj, export_dir, **kwargs)  # half the job done: files are on disk...
        raise OSError("disk full")             # ...and then the writer dies

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(model, tmp_path, "m", k=3)
    assert existing_versions(tmp_path / "m") == [1]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
    tf.saved_model.load(str(tmp_path / "m" / "1"))  # still loadable


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_version_directory_gets_the_umask_mode_not_owner_only(tmp_path, umask):
    """TF Serving often runs as another user: the version directory must be readable like any
    new directory (it was mkdtemp's 0700)."""
    previous = os.umask(umask)
    try:
        with atomic_version_dir(tmp_path / "m", 1) as scratch:
            (scratch / "saved_model.pb").write_bytes(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m" / "1").stat().st_mode) == 0o777 & ~umask


def test_atomic_dir_refuses_to_overwrite(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="Version 1"):
        with atomic_version_dir(tmp_path / "m", 1):
            pass


@pytest.mark.parametrize("version", [-1, 1.0, True, "2", None])
def test_atomic_dir_refuses_a_version_that_is_not_a_non_negative_int(tmp_path, version):
    if version is None:  # the default: the next version
        with atomic_version_dir(tmp_path / "m", version):
            pass
        assert existing_versions(tmp_path / "m") == [1]
        return
    with pytest.raises(ValueError, match=r"version must be an int >= 0 \(TF Serving loads only "
                                         r"non-negative integer version directories\)"):
        with atomic_version_dir(tmp_path / "m", version):
            pass
    assert not (tmp_path / "m").exists()


def test_atomic_dir_takes_version_zero_and_numpy_ints(tmp_path):
    for version in (0, np.int64(3)):
        with atomic_version_dir(tmp_path / "m", version):
            pass
    assert existing_versions(tmp_path / "m") == [0, 3]


@pytest.mark.parametrize("k", [0, 10_000, 2.0, True])
def test_export_names_k_when_it_is_not_an_item_count(trained, tmp_path, k):
    model, _ = trained
    items = model.config.vocab_size - 2
    with pytest.raises(ValueError, match=rf"^k \(max_k\) must be an int in \[1, {items}\] "
                                         rf"\(the model's items\)\. Received: k={k!r}$"):
        export_saved_model(model, tmp_path, "m", k=k)
    assert not (tmp_path / "m").exists()


def test_export_takes_a_numpy_k(trained, tmp_path):
    model, _ = trained
    path = export_saved_model(model, tmp_path, "m", k=np.int64(3))
    assert json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())["k"] == 3
