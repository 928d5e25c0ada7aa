"""The harness's version, on its own so that results rows can name it without importing ``harness``
itself: the package's ``__init__`` imports the user-facing API, which every layer below it would then
import back."""

__version__ = "0.1.0"
