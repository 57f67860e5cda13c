"""The transformer recipes' heavy dependencies load only when such a recipe is chosen."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "onnxruntime", "tokenizers", "peft", "sentence_transformers")


def _loaded_after(code: str) -> list[str]:
    report = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_modules_do_not_import_torch() -> None:
    code = (
        "import loopml, loopml.cli, loopml.serving, loopml.serving.app, loopml.pipeline, "
        "loopml.pipeline.train, loopml.monitoring, loopml.control, loopml.recipes, loopml.demo"
    )
    assert _loaded_after(code) == []


def test_minilm_modules_import_nothing_heavy_until_used() -> None:
    # Unpickling a MiniLM model imports these modules: serving must not drag torch in with them.
    code = "import loopml.recipes.minilm, loopml.recipes.onnx_encoder, loopml.recipes.minilm_lora"
    assert _loaded_after(code) == []


def test_spark_engine_imports_without_pyspark() -> None:
    # MLflow imports pyspark whenever it is installed (mlflow.types.schema), so the check is that
    # the engine's module loads where pyspark is missing (a machine without the spark extra).
    block = (
        "import sys\n"
        "class _NoSpark:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pyspark', 'py4j'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, _NoSpark())\n"
        "import loopml.batch.spark, loopml.cli"
    )
    assert _loaded_after(block) == []
