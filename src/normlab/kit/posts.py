"""The posts the lab's studies reproduce, by id: the file each one is, under the shared material's ``seeds/``.

A report names a post by its title and this file name, so a reader can open it; the name is known here, so
the report shows it on a machine that does not hold the posts too.
"""

from __future__ import annotations

POSTS_DIR = "seeds"
POST_FILES: dict[str, str] = {
    "000": "000_7f295ba4d48bbd58.txt",
    "001": "001_6331f92237b469aa.txt",
    "002": "002_0c1ed254184aaf19.txt",
    "003": "003_07b95923b0134b21.txt",
    "004": "004_76bff55442b08271.txt",
}


def post_file(post_id: str) -> str | None:
    """``"seeds/003_07b95923b0134b21.txt"`` for a known post id, else ``None``."""
    name = POST_FILES.get(post_id)
    return f"{POSTS_DIR}/{name}" if name else None
