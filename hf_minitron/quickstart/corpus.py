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


def _stdlib_docstrings(min_chars: int = 40) -> dict[str, str]:
    """Docstrings of the standard library's modules, classes and functions, one document per module.

    Source files are parsed with `ast` (nothing is imported, so no module has side effects).
    """
    root = sysconfig.get_paths()["stdlib"]
    docs: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith((".", "config-"))
        )
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            parts = []
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= min_chars:
                        parts.append(doc.strip())
            if parts:
                docs[f"stdlib:{os.path.relpath(path, root)}"] = "\n\n".join(parts)
    return docs


def builtin_corpus(
    heldout_fraction: float = 0.05, max_chars: int | None = None
) -> tuple[list[str], list[str]]:
    """Train and held-out documents from `pydoc_data.topics` and the standard library's docstrings.

    Documents (a pydoc topic, or all docstrings of one module) are ordered by the MD5 of their name; the
    first ones, up to `heldout_fraction` of the characters, are held out. The split depends only on the
    Python version's files, so every run on a machine sees the same split.

    Args:
        heldout_fraction (`float`, defaults to 0.05): share of characters held out for evaluation.
        max_chars (`int`, *optional*): keep only about this many characters in total (for smoke tests).

    Returns:
        `(train_texts, heldout_texts)`: two lists of documents.
    """
    docs = {**_pydoc_topics(), **_stdlib_docstrings()}
    keys = sorted(docs, key=lambda k: hashlib.md5(k.encode()).hexdigest())
    if max_chars is not None:
        kept, total = [], 0
        for k in keys:
            if total >= max_chars:
                break
            text = docs[k][: max_chars - total]
            docs[k] = text
            kept.append(k)
            total += len(text)
        keys = kept
    total = sum(len(docs[k]) for k in keys)
    heldout, train, budget = [], [], heldout_fraction * total
    for k in keys:
        if budget > 0:
            heldout.append(docs[k])
            budget -= len(docs[k])
        else:
            train.append(docs[k])
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
