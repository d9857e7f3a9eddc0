"""`import tfrec_attn` guarantees Keras 2, or fails with an ImportError that says what to do."""

import os
import subprocess
import sys


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=300)


def test_import_selects_keras_2_before_tensorflow():
    out = _run("import tfrec_attn, tensorflow as tf, tf_keras\n"
               "assert tf.keras.layers.Layer is tf_keras.layers.Layer\nprint('keras2')")
    assert out.returncode == 0, out.stderr
    assert "keras2" in out.stdout


def test_tensorflow_imported_first_but_keras_unused_still_gets_keras_2():
    out = _run("import tensorflow as tf\nimport tfrec_attn, tf_keras\n"
               "assert tf.keras.layers.Layer is tf_keras.layers.Layer\nprint('keras2')")
    assert out.returncode == 0, out.stderr
    assert "keras2" in out.stdout


def test_tensorflow_imported_first_with_keras_3_is_a_clear_error():
    out = _run("import tensorflow as tf\ntf.keras.layers\nimport tfrec_attn",
               TF_USE_LEGACY_KERAS="0")
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "TF_USE_LEGACY_KERAS=1" in out.stderr
    assert "already Keras 3" in out.stderr


def test_tensorflow_imported_first_and_keras_3_used_is_a_clear_error_without_the_variable():
    out = _run("import tensorflow as tf\ntf.keras.layers\nimport tfrec_attn")
    assert out.returncode != 0 and "already Keras 3" in out.stderr


def test_explicit_keras_3_request_is_refused():
    out = _run("import tfrec_attn", TF_USE_LEGACY_KERAS="0")
    assert out.returncode != 0
    assert "asks for Keras 3" in out.stderr


def test_saving_our_same_named_layer_does_not_warn_but_others_still_do(tmp_path, caplog):
    from tfrec_attn._keras import keras
    from tfrec_attn.layers import MultiHeadAttention

    class Dense(keras.layers.Layer):  # not ours: tf-keras' warning stays
        def call(self, x):
            return x

    x = keras.Input((4, 8))
    model = keras.Model(x, Dense()(MultiHeadAttention(num_heads=2, key_dim=4)(x)))
    with caplog.at_level("WARNING"):
        model.save(tmp_path / "model", save_format="tf")
    warned = [r.getMessage() for r in caplog.records if "as a built-in TF-Keras" in r.getMessage()]
    assert len(warned) == 1 and "'Dense'" in warned[0]
