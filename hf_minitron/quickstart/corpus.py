"""The quickstart corpus: text that ships with every Python, split deterministically into train and held-out."""

from __future__ import annotations

import ast
import hashlib
import os
import sysconfig

__all__ = ["builtin_corpus", "corpus_fingerprint"]

# Folders of the standard library whose docstrings are left out (tests, GUI demos, vendored or generated code).
_SKIP_DIRS = {
    "__pycache__", "dist-packages", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "site-packages",
    "test", "tests", "tkinter", "turtledemo",
}  # fmt: skip


def _pydoc_topics() -> dict[str, str]:
    """Python's reference documentation as plain text, one document per topic."""
    from pydoc_data.topics import topics

    return {f"pydoc:{name}": text.strip() for name, text in sorted(topics.items()) if text.strip()}


def _stdlib_files() -> dict[str, str]:
    """`{document name: source path}` of the standard library modules whose docstrings are used."""
    root = sysconfig.get_paths()["stdlib"]
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith((".", "config-"))
        )
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                files[f"stdlib:{os.path.relpath(path, root)}"] = path
    return files


def _docstrings(path: str, min_chars: int = 40) -> str:
    """Docstrings of one module's module, classes and functions, parsed with `ast` (nothing is imported)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                parts.append(doc.strip())
    return "\n\n".join(parts)


def builtin_corpus(
    heldout_fraction: float = 0.05, max_chars: int | None = None
) -> tuple[list[str], list[str]]:
    """Train and held-out documents from `pydoc_data.topics` and the standard library's docstrings.

    Documents (a pydoc topic, or all docstrings of one module) are ordered by the MD5 of their name; the
    first ones, up to `heldout_fraction` of the characters, are held out. The split depends only on the
    Python version's files, so every run on a machine sees the same split.

    Args:
        heldout_fraction (`float`, defaults to 0.05): share of characters held out for evaluation.
        max_chars (`int`, *optional*): keep only about this many characters in total (for smoke tests); the
            documents are taken in the same MD5 order, so a smaller corpus is a prefix of the larger one.

    Returns:
        `(train_texts, heldout_texts)`: two lists of documents.
    """
    topics = _pydoc_topics()
    files = _stdlib_files()
    keys = sorted([*topics, *files], key=lambda k: hashlib.md5(k.encode()).hexdigest())
    docs: list[str] = []
    total = 0
    for key in keys:
        if max_chars is not None and total >= max_chars:
            break
        text = topics[key] if key in topics else _docstrings(files[key])
        if not text:
            continue
        if max_chars is not None:
            text = text[: max_chars - total]
        docs.append(text)
        total += len(text)
    heldout, train, budget = [], [], heldout_fraction * total
    for text in docs:
        if budget > 0:
            heldout.append(text)
            budget -= len(text)
        else:
            train.append(text)
    if not train or not heldout:
        raise ValueError("the corpus is too small to split into train and held-out parts")
    return train, heldout


def corpus_fingerprint(*parts: list[str]) -> str:
    """Short hash of the documents, used in cache keys."""
    h = hashlib.sha256()
    for texts in parts:
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        h.update(b"\1")
    return h.hexdigest()[:16]
