"""Prompt suites: the task files, their discovery, prompt segments, the instruction-mode summary, bad input,
and one end-to-end prompt-mode run on a tiny random T5 (the real T5 tokenizer, the pinned MC data)."""

import importlib.util
import json
import statistics

import pytest

from harness.cli import main
from harness.registry import HarnessError
from harness.runners import prompt_suites
from harness.runners.lm_eval_bridge import TASKS_DIR

GLUE = ("sst2", "cola", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")
TASKS = ("rt-polarity", "boolq", "piqa", "openbookqa", "commonsenseqa", "mmlu", *GLUE)


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_files_are_what_build_prompts_writes():
    built = _module("build_prompts", TASKS_DIR / "build_prompts.py").files()
    for name, text in built.items():
        assert (TASKS_DIR / name).read_text() == text, f"{name} is stale: run python tasks/build_prompts.py"


def test_every_task_has_three_modes_and_five_templates():
    suites = prompt_suites.suites()
    for task in TASKS:
        assert set(suites[task]) == set(prompt_suites.MODES)
        assert len(suites[task]["instruction"]) >= 5 and len(suites[task]["few-shot"]) == 1


def test_glue_suites_parse_in_lm_eval_under_their_group_tags():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    # their own tags: `--tasks harness_zeroshot` must run offline
    tags = {
        "-zs": "harness_glue_zeroshot",
        "-fs": "harness_glue_fewshot",
        "-inst": "harness_glue_instruction",
    }
    for task in GLUE:
        names = [f"{task}-zs", f"{task}-fs", *(f"{task}-inst{i}" for i in range(1, 6))]
        for name in names:
            entry = manager.task_index[name]
            assert (
                entry.cfg["custom_dataset"].endswith("offline_data.glue")
                and entry.cfg["test_split"] == "validation"
            )
            tag = next(tag for suffix, tag in tags.items() if name.startswith(task + suffix))
            assert entry.tags == {tag} and name in manager.task_index[tag].tags


def test_glue_suite_prompts_come_from_the_task_loader(monkeypatch):
    """The GLUE hook reads harness.data.tasks (here a stand-in for the hub): instruction prompts list the
    options, few-shot demonstrations come from train."""
    import pandas as pd

    from harness.data import tasks

    def fake_hub(spec, seed=0):
        def split(kind, n):
            return pd.DataFrame(
                {"sentence": [f"{kind} sentence {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}
            )

        return {"train": split("train", 6), "validation": split("validation", 3)}, {"source": "test"}

    monkeypatch.setattr(tasks, "_load_hub", fake_hub)
    for cache in (prompt_suites.task_datasets, prompt_suites.load_lm_task):
        cache.cache_clear()
    try:
        instruction = prompt_suites.build_prompts("sst2-inst2", None, 2)
        assert [p.text.count("OPTIONS:\n- negative\n- positive") for p in instruction] == [1, 1]
        assert "validation sentence 1" in instruction[1].text
        few = prompt_suites.build_prompts("sst2-fs", 3, 1)[0]
        demonstrations = next(few.text[lo:hi] for name, lo, hi in few.spans if name == "demonstrations")
        assert demonstrations.count("train sentence") == 3 and "validation" not in demonstrations
    finally:
        for cache in (prompt_suites.task_datasets, prompt_suites.load_lm_task):
            cache.cache_clear()


def test_glue_prompt_suite_without_the_hub_is_one_line(tmp_path, monkeypatch, capsys):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # answered at once: no probe, no retries
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    prompt_suites.task_datasets.cache_clear()
    assert (
        main(
            [
                "run",
                "--models",
                "smollm2",
                "--tasks",
                "sst2",
                "--prompts",
                "zero-shot,instruction",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("harness: error: task 'sst2': its prompt suite needs nyu-mll/glue/sst2")
        and err.count("\n") == 1
    )
    assert "hub is unreachable" in err and "prompt suites that need no hub: boolq" in err
    assert not (tmp_path / "run").exists()


def test_parse_options():
    parse = _module("offline_data", TASKS_DIR / "offline_data.py").parse_options
    assert parse("\nA. bank\nB. library\nC. mall", "B. library") == (["bank", "library", "mall"], 1)
    assert parse("A. one\ncontinued\nB. two ", "A. one") == (["one continued", "two"], 0)
    with pytest.raises(ValueError):
        parse("no letters here", "A")


def test_segments_of_an_instruction_and_a_few_shot_prompt():
    text = "Pick one.\n\nQuestion: why?\nOPTIONS:\n- a\n- b\nAnswer:"
    prompt = prompt_suites.segment_prompt(
        text, "Pick one.\n\n", "Question: why?\nOPTIONS:\n- a\n- b\nAnswer:"
    )
    pieces = {name: text[lo:hi] for name, lo, hi in prompt.spans if name != "input"}
    assert pieces == {"instruction": "Pick one.\n\n", "options": "OPTIONS:\n- a\n- b"}
    shots = "Q: 1\nA: x\n\nQ: 2\nA:"
    prompt = prompt_suites.segment_prompt(shots, "", "Q: 2\nA:")
    assert prompt.spans == (("demonstrations", 0, 11), ("input", 11, len(shots)))


def test_segments_of_a_chat_rendered_instruction_prompt():
    """Through a chat template the system turn and its markup are the instruction; the markup after the
    asked text stays with the input, and the options end where the asked text's answer cue starts."""
    asked = "Review: fine\nOPTIONS:\n- negative\n- positive\nAnswer:"
    text = f"<s>system\nClassify.\n\n</s>\n<s>user\n{asked}</s>\n<s>assistant\n"
    prompt = prompt_suites.segment_prompt(text, "Classify.\n\n", asked, demonstrations=False)
    pieces = [(name, text[lo:hi]) for name, lo, hi in prompt.spans]
    assert pieces == [
        ("instruction", "<s>system\nClassify.\n\n</s>\n<s>user\n"),
        ("input", "Review: fine\n"),
        ("options", "OPTIONS:\n- negative\n- positive"),
        ("input", "\nAnswer:</s>\n<s>assistant\n"),
    ]


def test_few_shot_prompts_never_contain_the_asked_item():
    prompts = prompt_suites.build_prompts(
        "openbookqa-fs", 5, 20
    )  # no training split: same split, item excluded
    lm_task = prompt_suites.load_lm_task("openbookqa-fs")
    for prompt, doc in zip(prompts, lm_task.eval_docs):
        demonstrations = next(prompt.text[lo:hi] for name, lo, hi in prompt.spans if name == "demonstrations")
        assert demonstrations.count("Question:") == 5 and doc["question"] not in demonstrations


def test_instruction_mode_reports_mean_and_spread():
    summary = prompt_suites.combine(
        [{"acc": 0.5, "acc_stderr": 0.1}, {"acc": 0.7, "acc_stderr": 0.1}, {"acc": 0.6, "acc_stderr": 0.2}],
        "acc",
    )
    assert summary["acc"] == pytest.approx(0.6) and summary["template_spread"] == pytest.approx(
        statistics.stdev([0.5, 0.7, 0.6])
    )
    assert (summary["template_min"], summary["template_max"]) == (0.5, 0.7)
    assert summary["acc_stderr"] == pytest.approx(0.4 / 3)


def test_kept_segments_share_out_every_layer():
    from test_t5 import tiny_t5
    from transformers import AutoTokenizer

    import harness
    from harness.models.catalog import t5_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(t5_tokenizer())
    model = harness.prune(tiny_t5(vocab=32128), speedup=2.0)
    prompts = prompt_suites.build_prompts("piqa-inst1", None, 3)
    shares = prompt_suites.kept_segments(model, tokenizer, prompts)
    layers = len(model.last_kept) + 1
    assert all(len(values) == layers for values in shares.values())
    for layer in range(layers):
        assert sum(values[layer] for values in shares.values()) == pytest.approx(1.0)
    assert shares["instruction"][0] > 0 and shares["options"][0] > 0 and shares["demonstrations"][0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--prompts", "zero-shot,chain-of-thought"],
            "unknown prompt mode 'chain-of-thought'; valid: zero-shot, few-shot",
        ),
        (["--prompts", "few-shot", "--num-fewshot", "-1"], "--num-fewshot must be >= 0"),
        (
            ["--prompts", "few-shot", "--num-fewshot", "600"],
            "--num-fewshot 600 is more than task 'openbookqa' has",
        ),
        (["--prompts", "zero-shot", "--tasks", "heldout-ppl"], "task 'heldout-ppl' has no prompt suite"),
        (
            ["--prompts", "zero-shot", "--protocol", "zero-shot"],
            "--prompts and --protocol exclude each other",
        ),
        (["--models", "flan-t5", "--protocol", "finetune"], "cannot be fine-tuned as classifiers"),
        (
            ["--prompts", "zero-shot,few-shot", "--chat-template"],
            "--chat-template renders the instruction prompt mode",
        ),
    ],
)
def test_bad_prompt_input_is_one_line(tmp_path, capsys, args, message):
    argv = ["run", "--models", "smollm2", "--tasks", "openbookqa", *args, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_task_without_the_mode_and_unparsable_task_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine-zs.yaml").write_text(
        "task: mine-zs\nmetadata:\n  harness_task: piqa\n  prompt_mode: zero-shot\n"
    )
    monkeypatch.setattr(prompt_suites, "_tasks_dir", lambda: tmp_path)
    prompt_suites.suites.cache_clear()
    try:
        with pytest.raises(
            HarnessError, match="task 'piqa' has no few-shot prompt mode; its modes: zero-shot"
        ):
            prompt_suites.suite_files("piqa", "few-shot")
        assert (
            main(
                [
                    "run",
                    "--models",
                    "smollm2",
                    "--tasks",
                    "piqa",
                    "--prompts",
                    "zero-shot,few-shot",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "task 'piqa' has no few-shot prompt mode; its modes: zero-shot" in err and err.count("\n") == 1
        assert not (tmp_path / "run").exists()
        (tmp_path / "broken.yaml").write_text("task: [unclosed\n")
        prompt_suites.suites.cache_clear()
        assert (
            main(
                [
                    "run",
                    "--models",
                    "smollm2",
                    "--tasks",
                    "piqa",
                    "--prompts",
                    "zero-shot",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert f"task file {tmp_path / 'broken.yaml'} does not parse" in err and err.count("\n") == 1
        assert not (tmp_path / "run").exists()
    finally:
        prompt_suites.suites.cache_clear()


def _prompt_row(mode: str, speedup: float, score: float) -> dict:
    from test_report import _row

    traced = {
        "instruction": [0.0] * 3,
        "demonstrations": [0.8, 0.6, 0.5],
        "input": [0.2, 0.4, 0.5],
        "options": [0.0] * 3,
    }
    return {
        **_row("smollm2", "pretrained", speedup, score),
        "cell_key": f"smollm2|{mode}|{speedup}",
        "protocol": f"prompts/{mode}",
        "prompt_mode": mode,
        "chat_template": False,
        "num_fewshot": 5 if mode == "few-shot" else 0,
        "mean_prompt_tokens": 200.0 if mode == "few-shot" else 30.0,
        "kept_segments": traced if mode == "few-shot" else None,
    }


def test_leaderboard_and_plot_rebuild_the_prompt_board_of_a_prompt_run(tmp_path, capsys):
    from test_report import _row, _run_dir

    run = _run_dir(
        tmp_path,
        "prompt-run",
        [_prompt_row(mode, s, 0.7 - 0.1 * s) for mode in ("zero-shot", "few-shot") for s in (1.0, 2.0)],
    )
    plain = _run_dir(tmp_path, "plain-run", [_row("minilm", "pretrained", s, 0.9) for s in (1.0, 2.0)])
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "boards")]) == 0
    board = (tmp_path / "boards" / "prompt-run_prompts.md").read_text()
    table = [line for line in board.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and "| few-shot (5) |" in board and "-10.00" in board  # the drop against 1x
    assert (tmp_path / "boards" / "prompt-run_prompts.csv").is_file() and (
        tmp_path / "boards" / "prompt-run.md"
    ).is_file()
    assert main(["plot", str(run), "--out", str(tmp_path / "figures")]) == 0
    figures = {path.name for path in (tmp_path / "figures").iterdir()}
    assert {"prompt_modes_smollm2_rt-polarity.png", "kept_segments_smollm2_rt-polarity.png"} <= figures
    assert (
        main(["leaderboard", str(plain), "--out", str(tmp_path / "plain")]) == 0
    )  # no prompt rows: no prompt board
    assert sorted(path.name for path in (tmp_path / "plain").iterdir()) == ["plain-run.csv", "plain-run.md"]
    assert "prompt-mode" not in capsys.readouterr().out.split("plain-run.md")[-1]


def _tiny_t5_folder(tmp_path):
    """A local checkpoint folder: a tiny random T5 with the real T5 tokenizer (which has no chat template)."""
    from test_t5 import tiny_t5
    from transformers import AutoTokenizer

    from harness.models.catalog import t5_tokenizer

    folder = tmp_path / "t5"
    tiny_t5(vocab=32128).save_pretrained(folder)
    AutoTokenizer.from_pretrained(t5_tokenizer()).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_prompt_modes_end_to_end_on_a_tiny_t5(tmp_path, monkeypatch):
    """Three modes × two speedups on 2 PIQA items: rows, the prompt board and its figures."""
    folder = _tiny_t5_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "run",
                "--models",
                str(folder),
                "--tasks",
                "piqa",
                "--prompts",
                "zero-shot,few-shot,instruction",
                "--speedups",
                "1,2",
                "--limit",
                "2",
                "--batch-size",
                "2",
                "--repeats",
                "1",
                "--num-fewshot",
                "2",
                "--no-progress",
                "--out",
                "run",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {(row["prompt_mode"], row["speedup"]) for row in rows} == {
        (mode, s) for mode in prompt_suites.MODES for s in (1.0, 2.0)
    }
    by_mode = {row["prompt_mode"]: row for row in rows if row["speedup"] == 1.0}
    assert by_mode["few-shot"]["mean_prompt_tokens"] > by_mode["zero-shot"]["mean_prompt_tokens"]
    assert by_mode["few-shot"]["num_fewshot"] == 2 and by_mode["instruction"]["chat_template"] is False
    assert len(by_mode["instruction"]["template_scores"]) == 5
    assert (
        by_mode["zero-shot"]["kept_segments"] is None
        and "demonstrations" in by_mode["few-shot"]["kept_segments"]
    )
    board = (tmp_path / "run" / "leaderboards" / "run_prompts.md").read_text()
    table = [line for line in board.splitlines() if line.startswith("|")]  # a busy machine adds a footnote
    assert "| mode |" in board and "| template spread |" in board and len(table) == 2 + 6
    plots = {path.name for path in (tmp_path / "run" / "plots" / "run").iterdir()}
    for kind in ("prompt_modes", "kept_segments"):
        assert any(name.startswith(kind) and name.endswith("t5_piqa.png") for name in plots)


def test_chat_template_refused_before_the_run_folder_changes(tmp_path, capsys):
    """A tokenizer without a chat template is only known once the model loads: the refusal leaves an
    existing run's sweep.json (the description of its rows) as it was, and the folder without results."""
    folder = _tiny_t5_folder(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep.json").write_text('{"config": "an earlier run"}')
    capsys.readouterr()  # the save's progress bars
    assert (
        main(
            [
                "run",
                "--models",
                str(folder),
                "--tasks",
                "piqa",
                "--prompts",
                "instruction",
                "--chat-template",
                "--speedups",
                "1",
                "--limit",
                "2",
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "tokenizer has no chat template" in err and err.count("\n") == 1
    assert (run / "sweep.json").read_text() == '{"config": "an earlier run"}'
    assert not (run / "results.jsonl").exists()
