"""The local datatrove runner: its pool workers start with our modules and models loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from datatrove.pipeline.base import PipelineStep


class ProbeWorker(PipelineStep):
    """Writes what the worker process had loaded before running any pipeline step's work."""

    name = "probe"

    def __init__(self, out: str):
        super().__init__()
        self.out = out

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import os

        from mix_pipeline.core.filters import language as language_id, words
        from mix_pipeline.core.filters.registry import build_filter

        language = build_filter("gopher_repetition", {}).language  # what the prose filters ask for
        loaded = {
            "pid": os.getpid(),
            "spacy": "spacy.lang.en" in sys.modules,
            "langid_model": language_id.language_identifier.cache_info().currsize == 1,
            "word_splitter": language in words._splitters and words._splitters[language]._nlp is not None,
            "pandas": "pandas" in sys.modules,
        }
        with open(f"{self.out}/rank-{rank}.json", "w") as f:
            json.dump(loaded, f)
        yield from data or []


def test_pool_workers_are_forked_with_the_preloaded_modules_and_model(tmp_path):
    # A fresh interpreter: datatrove's forkserver is started once per process, and an earlier
    # test may already have started it.
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from mix_pipeline.core.stages import local_runner
        from mix_pipeline_tests.core.test_runner import ProbeWorker

        if __name__ == "__main__":
            with open({str(tmp_path / "parent")!r}, "w") as f:
                f.write(str(os.getpid()))
            local_runner(2)([ProbeWorker({str(tmp_path)!r})], {str(tmp_path / "logs")!r}, 2)
            import sys
            # The parent never loaded the model: the workers got it from the forkserver.
            from mix_pipeline.core.filters import language
            assert language.language_identifier.cache_info().currsize == 0
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=300)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert all(r["pid"] != int((tmp_path / "parent").read_text()) for r in ranks)  # pool workers
    assert all(r["spacy"] and r["langid_model"] and r["word_splitter"] and r["pandas"] for r in ranks), ranks


def test_released_workers_stop_their_forkserver_and_the_next_pool_starts_a_preloaded_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        from multiprocess import forkserver
        from mix_pipeline.core.stages import local_runner
        from mix_pipeline.core.stages.base import release_workers
        from mix_pipeline_tests.core.test_runner import ProbeWorker

        if __name__ == "__main__":
            pids = []
            for round in ("first", "second"):
                os.makedirs({str(tmp_path)!r} + "/" + round)
                local_runner(2)([ProbeWorker({str(tmp_path)!r} + "/" + round)], {str(tmp_path / "logs")!r}, 2)
                pids.append(forkserver._forkserver._forkserver_pid)
                release_workers()
                alive = os.path.exists(f"/proc/{{pids[-1]}}")
                pids.append(alive)
            json.dump(pids, open({str(tmp_path / "pids.json")!r}, "w"))
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=300)
    first, first_alive, second, second_alive = json.loads((tmp_path / "pids.json").read_text())
    assert first and second and first != second
    assert not first_alive and not second_alive
    ranks = [json.loads((tmp_path / "second" / f"rank-{r}.json").read_text()) for r in range(2)]
    assert all(r["spacy"] and r["langid_model"] and r["word_splitter"] for r in ranks), ranks
