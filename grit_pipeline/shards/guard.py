"""What every shard tool does with a hostile shard: one line per problem, the good rows carried on, exit 2.

A file that cannot be read as a shard (not Parquet, truncated, missing columns, wrong column types)
stops the tool. A broken row (an inverted or NaN box, a span outside its caption, an empty key, an
image over the build's pixel limit or one that does not decode) is printed on stderr as
``SHARD: row N key K: problem`` and left out of what `grit show` draws and `grit convert` writes
(`grit head` and `grit inspect` still show it: that is their job). A tool that met a problem exits
with status 2 once its work is done; `grit validate` checks every invariant and exits with status 1.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from grit_pipeline.errors import CommandError
from grit_pipeline.schemas import ShardFormatError
from grit_pipeline.shards.checks import basic_problems, image_header_problems
from grit_pipeline.shards.prefilter import suspect_rows

BATCH_ROWS = 2048  # rows turned into Python objects at once (with their images): bounded memory


@dataclass(frozen=True)
class Problem:
    """One broken invariant: where (shard, row, key) and what."""

    shard: str
    message: str
    row: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        if self.row is None:
            return f"{self.shard}: {self.message}"
        return f"{self.shard}: row {self.row} key {self.key!r}: {self.message}"


def unreadable(error: ShardFormatError) -> CommandError:
    """Print each defect of a file that is not a readable shard; the CommandError to raise after them."""
    for message in error.problems:
        print(Problem(error.path, message), file=sys.stderr)
    return CommandError(
        f"{error.path} cannot be read as a GRIT shard ({len(error.problems)} problem(s) above); "
        "`grit validate` checks every file"
    )


class ProblemLog:
    """The row problems a tool met, printed on stderr as they are found; ``finish`` turns them into exit 2."""

    def __init__(self, path: str):
        self.path, self.count = path, 0

    def report(self, problem: Problem) -> None:
        print(problem, file=sys.stderr)
        self.count += 1

    def good_rows(
        self, shard: str, table: pa.Table, row_numbers=None, max_pixels: int | None = None
    ) -> np.ndarray:
        """A mask of the rows of ``table`` without problems; each problem of the others is reported.

        ``row_numbers`` maps the table's rows to their index in the shard (default: the same); with
        ``max_pixels`` the image headers are checked too (for tools that decode or carry the images).
        """
        numbers = np.arange(table.num_rows) if row_numbers is None else np.asarray(row_numbers)
        suspect = suspect_rows(table)
        if max_pixels is not None and "image" in table.column_names:
            suspect |= table["image"].is_valid().to_numpy(zero_copy_only=False).astype(bool)
        good = np.ones(table.num_rows, dtype=bool)
        visit = np.flatnonzero(suspect)
        for first in range(0, len(visit), BATCH_ROWS):
            indices = visit[first : first + BATCH_ROWS]
            for index, row in zip(indices.tolist(), table.take(indices).to_pylist()):
                problems = basic_problems(row)
                problems += image_header_problems(row, max_pixels) if max_pixels is not None else []
                for message in problems:
                    self.report(Problem(shard, message, int(numbers[index]), row.get("key")))
                good[index] = not problems
        return good

    def finish(self) -> None:
        """A CommandError (exit status 2) when any problem was reported."""
        if self.count:
            raise CommandError(
                f"{self.count} problem(s) in the shards under {self.path!r}, listed above; "
                f"`grit validate {self.path}` checks every invariant"
            )
