"""License detection on the Python standard library, and where a document's license comes from."""

from __future__ import annotations

import collections
import os
import sysconfig

import pytest

from mix_pipeline.core.mixing.licenses import PUBLIC_DOMAIN, detect, document_license, hf_license
from mix_pipeline.core.provenance.lineage import input_fingerprint
from mix_pipeline.recipe import RecipeError, SourceSpec, load_recipe
from mix_pipeline_tests.conftest import write_jsonl, write_recipe

STDLIB = sysconfig.get_paths()["stdlib"]

# What each file's own header says (read by hand from the CPython 3.11 sources).
EXPECTED = {
    "tomllib/__init__.py": "MIT",  # SPDX-License-Identifier: MIT
    "tomllib/_parser.py": "MIT",
    "tarfile.py": "MIT",  # "Permission is hereby granted, free of charge, ..."
    "pstats.py": "PSF-2.0 AND Apache-2.0",  # Licensed to PSF ..., Licensed under the Apache License 2.0
    "optparse.py": "BSD-3-Clause",  # Redistribution and use ... Neither the name ...
    "logging/__init__.py": "HPND",  # Permission to use, copy, modify, and distribute ... without fee
    "http/cookies.py": "HPND",
    "xml/etree/ElementTree.py": "PSF-2.0 AND HPND",
    "abc.py": "PSF-2.0",  # Licensed to PSF under a Contributor Agreement.
    "doctest.py": PUBLIC_DOMAIN,  # Released to the public domain ...
    "fileinput.py": None,  # no license header
}


def _stdlib_files():
    for dirpath, dirs, files in os.walk(STDLIB):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "test", "tests", "idlelib"))
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def test_stdlib_headers_give_the_expected_licenses():
    for rel, expected in EXPECTED.items():
        assert detect(_read(os.path.join(STDLIB, rel))) == expected, rel


def test_the_whole_stdlib_as_a_code_source():
    found = collections.Counter(detect(_read(p)) for p in _stdlib_files())
    # Most modules carry no header (they fall back to the source's license, PSF-2.0 in a recipe).
    assert found[None] > sum(v for k, v in found.items() if k is not None)
    licenses = {part for k in found if k for part in k.split(" AND ")}
    assert {"PSF-2.0", "MIT", "Apache-2.0", "BSD-3-Clause", "HPND", PUBLIC_DOMAIN} <= licenses
    # Nothing copyleft: the stdlib holds no GPL header.
    assert not [k for k in licenses if "GPL" in k]
    assert found["PSF-2.0"] >= 40


def test_spdx_lines_and_common_headers():
    assert detect("// SPDX-License-Identifier: Apache-2.0 OR MIT\nint x;") == "Apache-2.0 OR MIT"
    assert detect("/* SPDX-License-Identifier: GPL-2.0-only */\n") == "GPL-2.0-only"
    gpl = ("# This program is free software: you can redistribute it and/or modify it under the terms of the\n"
           "# GNU General Public License as published by the Free Software Foundation, either version 3 of the\n")
    assert detect(gpl) == "GPL-3.0-or-later"
    lgpl = "# GNU Lesser General Public License as published by the Free Software Foundation; version 2.1\n"
    assert detect(lgpl) == "LGPL-2.1-or-later"
    assert detect("x = 1\n" * 3000 + "# SPDX-License-Identifier: MIT\n") is None  # past the header


def test_a_documents_license_comes_from_its_field_its_header_or_its_source():
    mit = "# SPDX-License-Identifier: MIT\n"
    spec = SourceSpec(path="x", license="PSF-2.0", detect_license=True)
    assert document_license(spec, {"license": "CC-BY-4.0"}, mit) == {"license": "CC-BY-4.0", "origin": "field"}
    assert document_license(spec, {}, mit) == {"license": "MIT", "origin": "header"}
    assert document_license(spec, {}, "print(1)") == {"license": "PSF-2.0", "origin": "source"}
    plain = SourceSpec(path="x")
    assert document_license(plain, {}, mit) == {"license": "unknown", "origin": "none"}  # no detection asked
    assert document_license(SourceSpec(path="x", license_field="rights"), {"rights": "MIT"}, "") == {
        "license": "MIT", "origin": "field"}
    assert hf_license("Apache-2.0") == "apache-2.0" and hf_license("GPL-3.0-or-later") == "gpl-3.0"
    assert hf_license("HPND") == "other" and hf_license("unknown") == "unknown"


def test_license_settings_rebuild_no_partition_and_allowed_licenses_is_checked(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": "hello"}])
    body = """
        name: lic
        data_root: data
        sources:
          web: {{path: "in/*.jsonl"{extra}}}
        mixtures:
          m: {{total: 10, weights: {{web: 1}}{mix}}}
    """
    plain = load_recipe(write_recipe(tmp_path, body.format(extra="", mix="")))
    licensed = load_recipe(write_recipe(tmp_path, body.format(extra=", license: MIT, detect_license: true",
                                                              mix=", allowed_licenses: [MIT]")))
    assert input_fingerprint(plain, "web", "default") == input_fingerprint(licensed, "web", "default")
    with pytest.raises(RecipeError, match="allowed_licenses"):
        load_recipe(write_recipe(tmp_path, body.format(extra="", mix=", allowed_licenses: []")))
