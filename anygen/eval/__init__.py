"""Evaluation of the Shapes World: measurement-based judges, a reply parser and match metrics.

``python -m anygen.eval.judges`` prints the judges' accuracy on rendered media
and their false alarms on noise (see :func:`validate_judges`).
"""

import importlib

_EXPORTS = {
    "judge_image": "judges",
    "judge_video": "judges",
    "judge_audio": "judges",
    "judge_mel": "judges",
    "validate_judges": "judges",
    "parse_reply": "parse",
    "ParsedReply": "parse",
    "judged_matches": "metrics",
    "all_correct": "metrics",
    "attribute_names": "metrics",
    "reply_names_medium": "metrics",
    "evaluate": "evaluation",
    "markdown_table": "evaluation",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Imported on first use, so `python -m anygen.eval.judges` does not find the module half-imported.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
