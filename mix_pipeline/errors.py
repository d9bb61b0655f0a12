"""The one error the CLI turns into a one-line message and exit 2 (defined apart from recipe/ so
that the modules recipe/ builds on, such as core/io/storage.py, can raise it without a cycle)."""


class RecipeError(ValueError):
    """A recipe or configuration problem, phrased as one line that names the offending key and the fix."""
