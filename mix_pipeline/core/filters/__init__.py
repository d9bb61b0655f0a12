"""The filters a recipe can list. Each family is one module whose class declares whether it drops or
rewrites, which parameters are file paths and whether it splits words (base.FilterFamily);
`registry` maps each filter's name to its class, one line a family, and is the one place the
stages, the recipe, the catalog, the gates, the dataset card and the scoring ask about a filter."""
