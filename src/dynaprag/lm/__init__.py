"""Language models: loading (bundled GGUF, Hugging Face id, local folder) and white-box decoding."""
from dynaprag.lm.generator import (DecodeState, Generation, GenerationConfig, Generator, PrefixCache,
                                   PromptTooLong, StepOutput)
from dynaprag.lm.models import DEFAULT_MODEL, LoadedModel, load_model, resolve_dtype
from dynaprag.lm.sources import MODELS, ModelError

__all__ = ["DEFAULT_MODEL", "MODELS", "DecodeState", "Generation", "GenerationConfig", "Generator",
           "LoadedModel", "ModelError", "PrefixCache", "PromptTooLong", "StepOutput", "load_model",
           "resolve_dtype"]
