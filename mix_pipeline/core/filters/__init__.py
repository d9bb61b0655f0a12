"""The filters a recipe can list. Each family is one module that owns its name, whether it drops or
rewrites, its parameters and what it measures; `registry` lists the families and is the one place
the stages, the catalog, the gates, the dataset card and the scoring ask about a filter."""
