"""One identity per person: raw subject spellings compared as ``names.subject_key`` folds them."""

from __future__ import annotations

from smile_vlm.errors import ScanError
from smile_vlm.readers import names


def check_identities(dataset: str, subjects, source) -> None:
    """Raise ScanError when two raw spellings fold to one identity (names.subject_key).

    'S01' and 's01' in one dataset are either one person filed twice or two people whose
    names differ only in case; either way grouping and leakage checks would be wrong.
    """
    spellings: dict[str, set[str]] = {}
    for subject in subjects:
        spellings.setdefault(names.subject_key(subject), set()).add(str(subject))
    clashes = [sorted(group) for group in spellings.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(s) for s in group) for group in sorted(clashes))
        first = clashes[0]
        raise ScanError(source, f"subjects {shown} are one identity after Unicode NFKC, strip, casefold and "
                                f"confusable skeleton; "
                                f"rename one, or if they are the same person set datasets.{dataset}.same_person: "
                                f"{{{first[1]!r}: {first[0]!r}}}")
