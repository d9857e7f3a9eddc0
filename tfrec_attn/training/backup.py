"""Fault-tolerant training: Keras' `BackupAndRestore` that also keeps the run callbacks' state,
and the completed stages of a run that trains more than once.

Keras' callback backs up the model, the optimizer and the epoch counter, and a restarted `fit`
resumes at the next epoch. A run's report also needs what its callbacks gathered before the
interruption (validation records, early stopping's best value, wait and weights, epoch times,
the time budget's clock); `RunBackup` saves those beside Keras' checkpoint and restores them.
A `fit` that completes deletes its backup, so a run with more work after it (the policy's
refit of its behaviour head) keeps the completed `fit` as a `CompletedStage` until it is done.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.training.distribution import is_chief
from tfrec_attn.validation import DataOptionError

# Options a run resumed from its backup may change; any other change makes it another run.
RESUMABLE_CHANGES = ("output", "export_root", "name", "verbose", "overwrite", "backup_dir",
                     "max_train_minutes")

_STATE = "run_state-{epochs}.json"
_BEST_WEIGHTS = "best_weights-{epoch}.npz"
_IDENTITY = "run_identity.json"


class BackupMismatchError(DataOptionError):
    """A backup made by a run with other settings than the run resuming from it. Raised before
    anything is restored or written; the train command reports it as a usage error (exit 2)."""


def check_backup_dir(path: str | os.PathLike) -> None:
    """Raises a `ValueError` naming `path` unless it is a directory or does not exist yet.

    Example:
    >>> check_backup_dir("runs/backup-that-does-not-exist-yet")
    """
    if not os.fspath(path):
        raise ValueError("backup_dir must be a directory path. Received: backup_dir=''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"backup_dir must be a directory (Keras' BackupAndRestore writes its "
                         f"checkpoint there), but it is a file. Received: backup_dir={path!r}")


class RunBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that also backs up the state of the run's callbacks.

    After every epoch the chief writes `run_state-{epochs}.json` (each tracked callback's
    `get_state()`, the epochs' training logs, `EarlyStopping`'s best value, wait and best epoch)
    and `best_weights-{epoch}.npz` (`EarlyStopping`'s best weights, when they change) to
    `backup_dir`, then Keras writes its checkpoint to `backup_dir/chief` (other workers write
    theirs to `backup_dir/workertemp_{id}` and delete it at once). When `fit` restarts after an
    interruption, Keras restores the model and resumes at the next epoch, and this callback
    restores every tracked callback to the end of that epoch. A `fit` that completes deletes
    the whole backup. `backup_dir` must be readable by every worker (a shared file system).

    Put it FIRST in the callback list. It backs up an epoch at the start of the next one,
    unlike Keras (in `on_epoch_end`), so the checkpoint and the state both come after every
    callback has finished the epoch (the validation record of an epoch is never lost).

    Args:
        backup_dir: directory for the backup; must not be shared with another run.
        tracked: callbacks whose state survives a restart: ones with `get_state()` and
            `set_state(state)` (JSON-able dicts), and `keras.callbacks.EarlyStopping`.
        identity: JSON-able `{section: {setting: value}}` a restart must repeat (e.g. the
            run's model and options), or `None`. Written to `run_identity.json` with the first
            backup; a `RunBackup` made later on the same `backup_dir` with another identity
            raises `BackupMismatchError` at once (naming what differs), before Keras restores
            anything or the backup changes.

    Attributes:
        resumed_epochs: epochs restored from the backup at the start of `fit` (0 when fresh).
        history: `{name: [value per epoch]}` logs of all epochs, restored ones included, with
            the `val_*` metrics later callbacks add (as in `keras.callbacks.History`).

    Example:
    >>> import tempfile
    >>> from tfrec_attn.training.callbacks import EpochTimer
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> timer = EpochTimer()
    >>> backup = RunBackup(tempfile.mkdtemp(), tracked=[timer])
    >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0,
    ...               callbacks=[backup, timer])
    >>> backup.resumed_epochs, len(backup.history["loss"]), len(timer.seconds)
    (0, 2, 2)
    """

    def __init__(self, backup_dir: str | os.PathLike, tracked=(), identity: dict | None = None):
        check_backup_dir(backup_dir)
        self.identity = (None if identity is None
                         else json.loads(json.dumps(identity, default=_json_value)))  # as saved
        _check_identity(Path(backup_dir), self.identity)  # before Keras reads the checkpoint
        super().__init__(os.fspath(backup_dir))
        names = [type(c).__name__ for c in tracked]
        if len(set(names)) != len(names):
            raise ValueError(f"tracked callbacks must be of distinct classes. Received: {names}")
        for callback in tracked:
            if not isinstance(callback, keras.callbacks.EarlyStopping) and not (
                    hasattr(callback, "get_state") and hasattr(callback, "set_state")):
                raise ValueError(f"tracked callbacks need get_state() and set_state(). "
                                 f"Received: {type(callback).__name__}")
        self.tracked = list(tracked)
        self.resumed_epochs = 0
        self._logs: list[dict] = []
        self._started = False
        self._best_file = None

    @property
    def history(self) -> dict:
        """`{name: [value per epoch]}`, like `keras.callbacks.History` (`val_*` included)."""
        epochs = self._epoch_logs(len(self._logs))
        keys = dict.fromkeys(k for logs in epochs for k in logs)
        return {k: [logs.get(k) for logs in epochs] for k in keys}

    def _epoch_logs(self, epochs: int) -> list[dict]:
        """The logs of the first `epochs` epochs as JSON-able floats."""
        return [{k: float(v) for k, v in logs.items()} for logs in self._logs[:epochs]]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # Keras restores the model, optimizer and epoch counter
        self._logs, self._started, self.resumed_epochs, self._best_file = [], False, 0, None

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:  # after every callback's on_train_begin has reset it
            self._started = True
            if epoch > 0:
                self._restore(epoch)
        else:
            self._save(epoch)
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        # Keras would save here, before later callbacks finish the epoch: saved in _save.
        # Keep the dict itself, not a copy: Keras hands this same dict to every later callback,
        # and `RankingEvaluation` adds the epoch's `val_*` metrics to it after this call.
        self._logs.append(logs if logs is not None else {})

    def on_train_end(self, logs=None):
        read_dir = self._training_state.read_checkpoint_manager.directory
        write_dir = self._training_state.write_checkpoint_manager.directory
        super().on_train_end(logs)  # the chief deletes Keras' checkpoint
        if write_dir != read_dir:  # another worker's scratch dir, left when no epoch was saved
            shutil.rmtree(write_dir, ignore_errors=True)
        if self._chief():
            self._prune(keep=())

    def _chief(self) -> bool:
        return is_chief(self.model.distribute_strategy)

    def _save(self, epochs: int) -> None:
        """Backs up the first `epochs` epochs: our state first, then Keras' checkpoint."""
        if self._chief():
            state = {"logs": self._epoch_logs(epochs)}
            for callback in self.tracked:
                state[type(callback).__name__] = (
                    self._early_stopping_state(callback)
                    if isinstance(callback, keras.callbacks.EarlyStopping)
                    else callback.get_state())
            from tfrec_attn.training.run import write_json  # lazy: run.py imports this module

            if self.identity is not None and not (Path(self.backup_dir) / _IDENTITY).exists():
                write_json(Path(self.backup_dir) / _IDENTITY, self.identity)
            write_json(Path(self.backup_dir) / _STATE.format(epochs=epochs), state)
        self._backup(epoch=epochs - 1)  # every worker: Keras' save syncs variables
        if self._chief():  # older files stay until the checkpoint that supersedes them exists
            self._prune(keep=(_STATE.format(epochs=epochs), self._best_file, _IDENTITY))

    def _early_stopping_state(self, stopping) -> dict:
        if stopping.best_weights is not None:
            name = _BEST_WEIGHTS.format(epoch=stopping.best_epoch + 1)
            if name != self._best_file:
                _save_weights(Path(self.backup_dir) / name, stopping.best_weights)
                self._best_file = name
        return {"best": float(stopping.best), "wait": stopping.wait,
                "best_epoch": stopping.best_epoch, "stopped_epoch": stopping.stopped_epoch,
                "best_weights": self._best_file if stopping.best_weights is not None else None}

    def _restore(self, epochs: int) -> None:
        """Restores the tracked callbacks to the end of epoch `epochs` (Keras' checkpoint)."""
        path = Path(self.backup_dir) / _STATE.format(epochs=epochs)
        if not path.exists():
            raise RuntimeError(
                f"backup_dir={self.backup_dir!r} holds Keras' checkpoint after epoch {epochs} "
                f"but not {path.name}, so the run's validation records cannot be restored. "
                "With several workers, every worker must see the chief's backup_dir (a shared "
                "file system); otherwise delete the directory to start the run over.")
        state = json.loads(path.read_text())
        self._logs = state["logs"]
        for callback in self.tracked:
            saved = state[type(callback).__name__]
            if isinstance(callback, keras.callbacks.EarlyStopping):
                self._restore_early_stopping(callback, saved)
            else:
                callback.set_state(saved)
        self.resumed_epochs = epochs

    def _restore_early_stopping(self, stopping, saved: dict) -> None:
        stopping.best, stopping.wait = saved["best"], saved["wait"]
        stopping.best_epoch, stopping.stopped_epoch = saved["best_epoch"], saved["stopped_epoch"]
        self._best_file = saved["best_weights"]
        if self._best_file:
            with np.load(Path(self.backup_dir) / self._best_file) as f:
                stopping.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]

    def _prune(self, keep) -> None:
        """Deletes this callback's files in `backup_dir` except `keep`."""
        for pattern in ("run_state-*.json", "best_weights-*.npz", _IDENTITY):
            for path in Path(self.backup_dir).glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)


def _check_identity(backup_dir: Path, identity: dict | None) -> None:
    """Raises `BackupMismatchError` if `backup_dir` holds a backup of a run whose recorded
    identity differs from `identity` (nothing to check without either)."""
    path = backup_dir / _IDENTITY
    if identity is None or not path.exists():
        return
    differences = _differences(json.loads(path.read_text()), identity)
    if differences:
        raise BackupMismatchError(
            f"backup_dir={str(backup_dir)!r} holds the backup of an interrupted run with other "
            f"settings ({'; '.join(differences)}). Rerun with the settings it was made with to "
            "resume that run, or delete the directory to start over.")


def _save_weights(path: Path, weights: list[np.ndarray]) -> None:
    """`np.savez` via a temporary file and rename (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, *weights)
    os.replace(tmp, path)


class CompletedStage:
    """A completed stage of a run (a `fit` and what the run reads from it) kept in
    `backup_dir/name` until the whole run is done, so a restarted run skips the stage.

    `save` writes the model's weights (`weights.npz`) and the stage's JSON-able `results`
    with the run's `identity` (`state.json`) on the chief only, atomically: into a temporary
    directory renamed to `name` when complete. `load` returns them, or `None` when the stage was
    not saved, after checking that the saved identity is this run's: a stage of a run with other
    settings raises a `BackupMismatchError` (a `ValueError`) naming `backup_dir` and what
    differs, rather than being reused. The run deletes the stage when it is done
    (`remove_backup`).

    Args:
        backup_dir: the run's backup directory (readable by every worker).
        name: the stage's directory in `backup_dir`.
        identity: JSON-able `{section: {setting: value}}` a restart must repeat (e.g. the
            model's config and the run's options).

    Example:
    >>> import tempfile
    >>> backup = tempfile.mkdtemp()
    >>> stage = CompletedStage(backup, "fitted", {"model": {"dim": 8}})
    >>> stage.load() is None
    True
    >>> stage.save([np.ones(2)], {"epochs": 3})
    >>> weights, results = stage.load()
    >>> weights[0].tolist(), results
    ([1.0, 1.0], {'epochs': 3})
    >>> CompletedStage(backup, "fitted", {"model": {"dim": 16}}).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn...BackupMismatchError: backup_dir=...other settings (model.dim: 8 there, 16 now)...
    """

    def __init__(self, backup_dir: str | os.PathLike, name: str, identity: dict):
        self.backup_dir = Path(backup_dir)
        self.name = name
        self.path = self.backup_dir / name
        self.identity = json.loads(json.dumps(identity, default=float))  # as saved

    def load(self) -> tuple[list[np.ndarray], dict] | None:
        """`(weights, results)` of the saved stage, or `None` if there is none."""
        if not (self.path / "state.json").exists():
            return None
        state = json.loads((self.path / "state.json").read_text())
        differences = _differences(state["identity"], self.identity)
        if differences:
            raise BackupMismatchError(
                f"backup_dir={str(self.backup_dir)!r} holds the completed {self.name!r} stage of "
                f"a run with other settings ({'; '.join(differences)}). Rerun with the settings "
                "it was made with to resume that run, or delete the directory to start over.")
        with np.load(self.path / "weights.npz") as f:
            weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        return weights, state["results"]

    def save(self, weights: list[np.ndarray], results: dict,
             strategy: tf.distribute.Strategy | None = None) -> None:
        """Writes the stage (the chief of `strategy` only; default: the current strategy).
        Call it on every worker, with `weights` read on each (reading them may be collective)."""
        if not is_chief(strategy):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # a crash's leftover
        _save_weights(tmp / "weights.npz", weights)
        from tfrec_attn.training.run import write_json  # lazy: run.py imports this module

        write_json(tmp / "state.json", {"identity": self.identity, "results": results})
        os.replace(tmp, self.path)


def remove_backup(backup_dir: str | os.PathLike, names,
                  strategy: tf.distribute.Strategy | None = None) -> None:
    """Deletes `backup_dir/name` for each of `names` (a run's stages and backups; the chief of
    `strategy` only), once the whole run is done."""
    if is_chief(strategy):
        for name in names:
            shutil.rmtree(Path(backup_dir) / name, ignore_errors=True)


def _differences(saved: dict, current: dict) -> list[str]:
    """`section.setting: saved there, current now` for every setting that differs, nested
    settings by their full path (`options.model.dim: 8 there, 16 now`). A section `saved`
    lacks was not recorded by the version that saved it (e.g. `"dataset"`, the data's
    fingerprint, before it was part of a fit's identity): it is not compared; nor are the
    options a resumed run may change (`RESUMABLE_CHANGES`), which older versions recorded in
    some stages (the policy's kept fit, `max_train_minutes`).

    >>> _differences({"options": {"model": {"dim": 8, "heads": 1}, "lr": 0.1}},
    ...              {"options": {"model": {"dim": 16, "heads": 1}, "lr": 0.1}, "new": {"x": 1}})
    ['options.model.dim: 8 there, 16 now']
    """
    saved, current = _without_resumable(saved), _without_resumable(current)
    return [line for section in dict.fromkeys([*saved, *current]) if section in saved
            for line in _nested_differences(section, saved[section], current.get(section, {}))]


def _without_resumable(identity: dict) -> dict:
    options = identity.get("options")
    if not isinstance(options, dict):
        return identity
    return {**identity, "options": {key: value for key, value in options.items()
                                    if key not in RESUMABLE_CHANGES}}


_NOT_SET = type("NotSet", (), {"__repr__": lambda self: "(not set)"})()  # a key one side lacks


def _nested_differences(path: str, saved, current) -> list[str]:
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [] if saved == current else [f"{path}: {saved!r} there, {current!r} now"]
    return [line for key in dict.fromkeys([*saved, *current])
            for line in _nested_differences(f"{path}.{key}", saved.get(key, _NOT_SET),
                                            current.get(key, _NOT_SET))]


def _json_value(value):
    """A numpy scalar as its Python value, anything else JSON lacks as its string."""
    return value.item() if hasattr(value, "item") else str(value)
