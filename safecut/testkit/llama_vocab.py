"""The real Llama-3 tokenizer for tests and the bench: ``ggml-vocab-llama-bpe.gguf`` (128,256 tokens,
280,147 merges, the Llama-3 pre-tokenizer), a vocab-only GGUF that llama.cpp keeps for its own tokenizer
tests and that the llama-cpp-python sdist vendors. Used to check that SafeCut's Llama Guard prompt is
token-for-token the official one, and to give the bench models a real vocabulary.

Where it comes from, first hit wins: ``<root>/vocab/`` (default root: ``.cache/`` in the repository,
gitignored), ``$SAFECUT_LLAMA_VOCAB``, an sdist already on disk (``$SAFECUT_LLAMA_SDIST``, ``.cache/``,
``/tmp/lcpp``, ``/tmp``, pip's cache), else ``pip download`` of the sdist (77 MB, about a minute).
``python -m safecut.testkit.llama_vocab`` fetches it (scripts/setup.sh does) and prints its path.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile

LCPP_VERSION = "0.3.36"
VOCAB_NAME = "ggml-vocab-llama-bpe.gguf"
VOCAB_MEMBER = f"vendor/llama.cpp/models/{VOCAB_NAME}"
SDIST_NAME = f"llama_cpp_python-{LCPP_VERSION}.tar.gz"


def repo_cache_dir() -> str:
    """``<repository>/.cache`` (gitignored)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".cache")


def find_sdist() -> str | None:
    env = os.environ.get("SAFECUT_LLAMA_SDIST")
    if env and os.path.isfile(env):
        return env
    hits = [os.path.join(d, SDIST_NAME) for d in (repo_cache_dir(), os.path.join(repo_cache_dir(), "sdist"),
                                                  "/tmp/lcpp", "/tmp")]
    hits += glob.glob(os.path.join(os.path.expanduser("~"), ".cache", "pip", "**", SDIST_NAME), recursive=True)
    return next((h for h in hits if os.path.isfile(h)), None)


def find_vocab(root: str | None = None) -> str | None:
    """The vocab if it is already on disk (nothing is downloaded or extracted)."""
    out = os.path.join(root or repo_cache_dir(), "vocab", VOCAB_NAME)
    if os.path.isfile(out):
        return out
    env = os.environ.get("SAFECUT_LLAMA_VOCAB")
    return env if env and os.path.isfile(env) else None


def llama_vocab(root: str | None = None, log=print, download: bool = True) -> str:
    """Path of ggml-vocab-llama-bpe.gguf, extracted from the llama-cpp-python sdist into ``<root>/vocab``
    (fetched with pip when ``download`` and no sdist is on disk). Raises FileNotFoundError otherwise."""
    root = root or repo_cache_dir()
    found = find_vocab(root)
    if found:
        return found
    sdist = find_sdist()
    if sdist is None:
        if not download:
            raise FileNotFoundError(f"{VOCAB_NAME} is not in {os.path.join(root, 'vocab')} and no {SDIST_NAME} is "
                                    f"on disk: run `python -m safecut.testkit.llama_vocab` (downloads 77 MB)")
        dest = os.path.join(root, "sdist")
        os.makedirs(dest, exist_ok=True)
        log(f"[vocab] pip download llama-cpp-python=={LCPP_VERSION} sdist (vocab only, 77 MB) ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                        f"llama-cpp-python=={LCPP_VERSION}", "-d", dest], check=True, stdout=subprocess.DEVNULL)
        sdist = os.path.join(dest, SDIST_NAME)
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
    print(llama_vocab())
