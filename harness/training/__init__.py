"""Fine-tuning under elimination (offline tuning): the one loop every objective runs (``loop.run_steps``),
the classifier recipes (``loop.fine_tune``), the generative models' objectives (``lm.py``: causal LM and
seq2seq, the sandwich rule with distillation) and the cache of tuned models (``cache.py``).

Why a layer of its own: pruning methods decide each training step's loss (``Method.train_step``) but must
not import the loop that calls them, and the loop prunes and reloads models (``harness.api``).  So this
package sits above ``harness.api``, ``harness.models`` and ``harness.pruning``, and registers the training
recipes the methods name (``harness.contracts.method.RECIPES``); the runners sit above it.
"""
