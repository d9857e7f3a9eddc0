"""`run.check_trainable`'s message says how events are counted: every row is one, repeated
items included (nothing removes duplicate rows)."""

from pipelines import train as train_pipeline


def test_too_short_users_message_counts_every_row(tmp_path, capsys):
    data = tmp_path / "short.txt"
    data.write_text("".join(f"{user} 5\n{user} 5\n{user} 6\n" for user in range(1, 6)))
    argv = ["--format", "sasrec", "--data", str(data), "--output", str(tmp_path / "out"),
            "--export-root", "", "--verbose", "0"]
    assert train_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "no user to train on: 5 users kept" in err
    assert "at least 4 events; every row is one event, repeats of an item included" in err
    assert "duplicate rows are removed" not in err


def test_repeated_rows_count_as_events(tmp_path, capsys):
    data = tmp_path / "repeats.txt"
    # each user repeats one item: 4 rows, 2 distinct items (25 items: enough for the k=20 metrics)
    data.write_text("".join(f"{u} {u}\n{u} {u}\n{u} {u + 1}\n{u} {u + 1}\n" for u in range(1, 25)))
    argv = ["--format", "sasrec", "--data", str(data), "--output", str(tmp_path / "out"),
            "--export-root", "", "--verbose", "0", "--epochs", "1", "--max-len", "4",
            "--dim", "8", "--blocks", "1"]
    assert train_pipeline.main(argv) == 0  # trainable, as the message says
