"""The real Llama-3 tokenizer for tests and the bench: ``ggml-vocab-llama-bpe.gguf`` (128,256 tokens,
280,147 merges, the Llama-3 pre-tokenizer), a vocab-only GGUF that llama.cpp keeps for its own tokenizer
tests and that the llama-cpp-python sdist vendors. Used to check that SafeCut's Llama Guard prompt is
token-for-token the official one, and to give the bench models a real vocabulary.

Where it comes from, first hit wins: ``<root>/vocab/`` (default root: ``.cache/`` in the repository,
gitignored), ``$SAFECUT_LLAMA_VOCAB``, an sdist already on disk (``$SAFECUT_LLAMA_SDIST``, ``<root>/sdist``,
``.cache/``, ``/tmp/lcpp``, ``/tmp``, pip's cache). Shipped code never runs pip: the sdist (77 MB, about a
minute) is fetched by scripts/setup.sh or the bench with :func:`pip_download_args`.
``python -m safecut.testkit.llama_vocab`` extracts the vocab and prints its path (exit 1 when no sdist).
"""
from __future__ import annotations

import glob
import os
import sys
import tarfile

LCPP_VERSION = "0.3.36"
VOCAB_NAME = "ggml-vocab-llama-bpe.gguf"
VOCAB_MEMBER = f"vendor/llama.cpp/models/{VOCAB_NAME}"
SDIST_NAME = f"llama_cpp_python-{LCPP_VERSION}.tar.gz"


def repo_cache_dir() -> str:
    """``<repository>/.cache`` (gitignored)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".cache")


def pip_download_args(dest: str) -> list[str]:
    """Arguments after ``python`` that download the sdist into ``dest`` (run by setup.sh / the bench)."""
    return ["-m", "pip", "download", "--no-deps", "--no-binary=:all:", f"llama-cpp-python=={LCPP_VERSION}",
            "-d", dest]


def find_sdist(root: str | None = None) -> str | None:
    env = os.environ.get("SAFECUT_LLAMA_SDIST")
    if env and os.path.isfile(env):
        return env
    dirs = [os.path.join(root, "sdist")] if root else []
    dirs += [repo_cache_dir(), os.path.join(repo_cache_dir(), "sdist"), "/tmp/lcpp", "/tmp"]
    hits = [os.path.join(d, SDIST_NAME) for d in dirs]
    hits += glob.glob(os.path.join(os.path.expanduser("~"), ".cache", "pip", "**", SDIST_NAME), recursive=True)
    return next((h for h in hits if os.path.isfile(h)), None)


def find_vocab(root: str | None = None) -> str | None:
    """The vocab if it is already on disk (nothing is downloaded or extracted)."""
    out = os.path.join(root or repo_cache_dir(), "vocab", VOCAB_NAME)
    if os.path.isfile(out):
        return out
    env = os.environ.get("SAFECUT_LLAMA_VOCAB")
    return env if env and os.path.isfile(env) else None


def llama_vocab(root: str | None = None, log=print) -> str:
    """Path of ggml-vocab-llama-bpe.gguf, extracted from the llama-cpp-python sdist into ``<root>/vocab``.
    Raises FileNotFoundError (naming the command that fetches the sdist) when no sdist is on disk."""
    root = root or repo_cache_dir()
    found = find_vocab(root)
    if found:
        return found
    sdist = find_sdist(root)
    if sdist is None:
        raise FileNotFoundError(f"{VOCAB_NAME} is not in {os.path.join(root, 'vocab')} and no {SDIST_NAME} is on "
                                f"disk: run scripts/setup.sh, or `python {' '.join(pip_download_args('.cache/sdist'))}`")
    log(f"[vocab] extracting {VOCAB_NAME} from {sdist}")
    out = os.path.join(root, "vocab", VOCAB_NAME)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tarfile.open(sdist, "r:gz") as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(VOCAB_MEMBER))
        src = tf.extractfile(member)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(src.read())
        os.replace(tmp, out)
    return out


if __name__ == "__main__":
    try:
        print(llama_vocab(log=lambda m: print(m, file=sys.stderr)))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1)
