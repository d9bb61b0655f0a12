import pytest

from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline.recipe.inputs import source_files
from mix_pipeline_tests.conftest import write_jsonl, write_recipe

GOOD = """
name: t
data_root: ./data
sources:
  web: {path: "web/*.jsonl", filters: [gopher_quality, {language: {languages: [en], min_score: 0.6}}]}
  books: {path: "books/*.jsonl"}
dedup: {priority: [books, web]}
mixtures:
  m: {total: 1000, weights: {web: 0.5, books: 0.5}}
"""


@pytest.fixture
def folder(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "hello"}])
    write_jsonl(tmp_path / "books" / "a.jsonl", [{"id": "1", "text": "hello"}])
    return tmp_path


def test_good_recipe_loads_with_paths_resolved_against_its_folder(folder):
    recipe = load_recipe(write_recipe(folder, GOOD))
    assert recipe.data_root_path == str(folder / "data")
    assert source_files(recipe, "web") == [str(folder / "web" / "a.jsonl")]
    assert [f.name for f in recipe.sources["web"].filters] == ["gopher_quality", "language"]
    assert recipe.sources["web"].filters[1].params == {"languages": ["en"], "min_score": 0.6}
    assert recipe.priority_rank("books") < recipe.priority_rank("web")
    assert len(recipe.sha256) == 64


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("name: t\n", "name: t\ncolour: blue\n", "colour: unknown key"),
        ("  m: {total: 1000,", "  m: {totl: 5, total: 1000,", "mixtures.m.totl: unknown key"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 0.5, wiki: 0.5}", "mixtures.m.weights.wiki: unknown source"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: -0.5, books: 0.5}", "mixtures.m.weights: web: weight must be ≥ 0"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 0, books: 0}", "mixtures.m.weights: all weights are zero"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 1}, temperature: 2",
         "mixtures.m: give exactly one of 'weights' or 'temperature'"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 1}, sources: {books: {max_epochs: 2}}",
         "mixtures.m: sources.books: not in weights"),
        ("weights: {web: 0.5, books: 0.5}", "temperature: 2, sources: {wiki: {}}", "mixtures.m.sources.wiki: unknown source"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 0.5, books: 0.5}, max_fraction: 0.4",
         "mixtures.m: the max_fraction caps of books, web add up to 0.8 < 1"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 1}, on_infeasible: shrink", "mixtures.m.on_infeasible: Input should be"),
        ("weights: {web: 0.5, books: 0.5}", "weights: {web: 1}, outputs: {tokenized: true}",
         "mixtures.m.outputs.tokenized: needs tokenizer kind 'hf'"),
        ("[gopher_quality,", "[gopher_qualty,", "sources.web.filters: [0]: unknown filter 'gopher_qualty'"),
        ("min_score: 0.6", "min_scor: 0.6", "sources.web.filters: [1] language: unknown parameter 'min_scor'"),
        ("min_score: 0.6}}]", "min_score: 0.6}}, {pii: {kinds: [emial]}}]", "sources.web.filters: [2] pii: unknown kinds ['emial']"),
        ("min_score: 0.6}}]", "min_score: 0.6}}, {safety: {max_flagged_fraction: 5}}]", "[2] safety: max_flagged_fraction must be within [0, 1]"),
        ("min_score: 0.6}}]", "min_score: 0.6}}, {code_quality: {autogen_markers: ['(']}}]", "[2] code_quality: missing ), unterminated subpattern"),
        ("priority: [books, web]", "priority: [books, wiki]", "dedup.priority[1]: unknown source 'wiki'"),
        ('path: "books/*.jsonl"', 'path: "nothing/*.jsonl"', "sources.books.path: 'nothing/*.jsonl' matches no file"),
        ('  books: {path: "books/*.jsonl"}\n', '  books: {path: "books/*.jsonl", format: csv}\n', "sources.books.format: Input should be"),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_the_key(folder, old, new, expected):
    assert old in GOOD
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(folder, GOOD.replace(old, new)))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_sources_and_bad_yaml(folder):
    with pytest.raises(RecipeError, match="sources: required key is missing"):
        load_recipe(write_recipe(folder, "name: t\n"))
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(write_recipe(folder, "name: [t\n"))
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        load_recipe(folder / "nope.yaml")


def test_temperature_mixture_with_per_source_overrides(folder):
    body = GOOD.replace("weights: {web: 0.5, books: 0.5}",
                        "temperature: 2, max_epochs: 2, sources: {web: {max_epochs: 4, max_fraction: 0.6}, books: {}}")
    mix = load_recipe(write_recipe(folder, body)).mixtures["m"]
    assert mix.source_names(["web", "books"]) == ["books", "web"]
    assert (mix.max_epochs_of("web"), mix.max_epochs_of("books")) == (4, 2)
    assert (mix.max_fraction_of("web"), mix.max_fraction_of("books")) == (0.6, 1.0)
    everything = GOOD.replace("weights: {web: 0.5, books: 0.5}", "temperature: 1")
    assert load_recipe(write_recipe(folder, everything)).mixture_sources("m") == ["books", "web"]


# ---- paths outside the recipe's folder (bad-input catalogue) -----------------------------------
@pytest.mark.parametrize(
    "old, new, key",
    [
        ("data_root: ./data", "data_root: ../elsewhere", "data_root"),
        ("data_root: ./data", "data_root: /tmp", "data_root"),
        ('path: "web/*.jsonl"', 'path: "../outside/*.jsonl"', "sources.web.path"),
        ('path: "web/*.jsonl"', 'path: "web/../../outside/*.jsonl"', "sources.web.path"),
        ("name: t\n", "name: t\ndecontamination: {eval_sets: [../evals/*.jsonl]}\n", "decontamination.eval_sets[0]"),
        ("name: t\n", "name: t\ntokenizer: {kind: hf, path: /etc/tokenizer.json}\n", "tokenizer.path"),
        ("min_score: 0.6}}]", "min_score: 0.6}}, {safety: {word_lists: [../words.txt]}}]",
         "sources.web.filters[2].safety.word_lists"),
    ],
)
def test_paths_leading_outside_the_recipe_folder_are_refused(folder, old, new, key):
    assert old in GOOD
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(folder, GOOD.replace(old, new)), check_paths=False)
    message = str(err.value)
    assert f": {key}: '" in message and "outside the recipe's folder" in message and "allowed_roots" in message
    assert "\n" not in message


def test_symlinks_out_of_the_folder_are_refused_and_allowed_roots_let_paths_out(tmp_path):
    outside, home = tmp_path / "outside", tmp_path / "project"
    write_jsonl(outside / "a.jsonl", [{"id": "1", "text": "hello"}])
    write_jsonl(home / "web" / "a.jsonl", [{"id": "1", "text": "hello"}])
    (home / "web" / "sneaky.jsonl").symlink_to(outside / "a.jsonl")
    body = 'name: t\nsources:\n  web: {path: "web/*.jsonl"}\n'
    with pytest.raises(RecipeError, match=r"sources.web.path: '.*sneaky.jsonl' resolves to .*outside/a.jsonl, outside"):
        load_recipe(write_recipe(home, body))
    (home / "web" / "sneaky.jsonl").unlink()
    (home / "linked").symlink_to(outside)  # a folder symlink: its prefix resolves outside
    with pytest.raises(RecipeError, match="sources.books.path: 'linked/\\*.jsonl' resolves to"):
        load_recipe(write_recipe(home, body + '  books: {path: "linked/*.jsonl"}\n'))
    allowed = load_recipe(write_recipe(home, "allowed_roots: [../outside]\n" + body
                                       + '  books: {path: "linked/*.jsonl"}\n  more: {path: "../outside/*.jsonl"}\n'))
    assert source_files(allowed, "more") == [str(outside / "a.jsonl")]
    with pytest.raises(RecipeError, match="allowed_rots: unknown key"):
        load_recipe(write_recipe(home, "allowed_rots: [../outside]\n" + body))


# ---- weights and types (bad-input catalogue) ---------------------------------------------------------
def test_weights_not_summing_to_one_are_normalised_and_non_finite_numbers_refused(folder):
    from mix_pipeline.core.mixing.weights import allocate, requested_weights

    # Weights are relative: {web: 3, books: 1} is a 75/25 mixture, documented as "normalised".
    relative = load_recipe(write_recipe(folder, GOOD.replace("weights: {web: 0.5, books: 0.5}", "weights: {web: 3, books: 1}")))
    spec = relative.mixtures["m"]
    assert spec.weights == {"web": 3, "books": 1}
    assert requested_weights(spec, {"web": 5000, "books": 5000}) == {"web": 0.75, "books": 0.25}
    assert allocate(spec, {"web": 5000, "books": 5000}).targets == {"web": 750, "books": 250}
    for bad, expected in [
        ("weights: {web: .nan, books: 0.5}", "mixtures.m.weights.web: Input should be a finite number"),
        ("weights: {web: .inf, books: 0.5}", "mixtures.m.weights.web: Input should be a finite number"),
        ("weights: {web: 0.5, books: 0.5}, max_epochs: .inf", "mixtures.m.max_epochs: Input should be a finite number"),
        ("weights: {web: 0.5, books: 0.5}, total: lots", "mixtures.m.total: Input should be a valid integer"),
        ("weights: {web: 0.5, books: 0.5}, seed: [1]", "mixtures.m.seed: Input should be a valid integer"),
        ("weights: {web: half, books: 0.5}", "mixtures.m.weights.web: Input should be a valid number"),
        ("weights: [web, books]", "mixtures.m.weights: Input should be a valid dictionary"),
    ]:
        with pytest.raises(RecipeError) as err:
            load_recipe(write_recipe(folder, GOOD.replace("weights: {web: 0.5, books: 0.5}", bad)))
        assert expected in str(err.value), (bad, str(err.value))
