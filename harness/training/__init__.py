"""Fine-tuning: the one offline-tuning loop every training recipe runs (``loop.py``), and the cache of
fine-tuned models (``cache.py``).

Why a layer of its own: pruning methods decide each training step's loss (``Method.train_step``) but must
not import the loop that calls them, and the loop prunes and reloads models (``harness.api``).  So this
package sits above ``harness.api``, ``harness.models`` and ``harness.pruning``, and registers the training
recipes the methods name (``harness.contracts.method.RECIPES``); the runners sit above it.
"""
