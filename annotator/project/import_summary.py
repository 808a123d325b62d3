"""What an import did, in a few lines for the terminal or the app: counts, notes, then the first reasons."""

from __future__ import annotations

from collections import Counter

from annotator.project.coco_import import ImportReport

FIRST_REASONS = 5
"""Reasons listed without --verbose (the app's details box lists all)."""


def summary_headline(report: ImportReport) -> str:
    """One line: what was imported from where, and how many entries were skipped."""
    skipped = Counter(issue.kind for issue in report.issues)
    line = (
        f"Imported {report.annotations_imported} annotation(s) from {report.path.name}: "
        f"{report.images_matched} image(s) matched, {report.images_added} added, "
        f"{report.categories_added} categor{'y' if report.categories_added == 1 else 'ies'} added"
    )
    if skipped:
        line += "; skipped " + ", ".join(f"{count} {kind}(s)" for kind, count in sorted(skipped.items()))
    return line + "."


def issue_lines(report: ImportReport, limit: int | None = FIRST_REASONS) -> list[str]:
    """One line per skipped entry (`limit` of them, all if None), and how many more there are."""
    shown = report.issues if limit is None else report.issues[:limit]
    lines = [f"  {issue.kind} {issue.coco_id!r}: {issue.reason}" for issue in shown]
    if len(report.issues) > len(shown):
        lines.append(f"  ... and {len(report.issues) - len(shown)} more (--verbose lists them all)")
    return lines


def summary_lines(report: ImportReport, *, verbose: bool = False) -> list[str]:
    """The headline, the notes, and the reasons (the first few, or all when verbose)."""
    lines = [summary_headline(report)]
    lines += [f"Note: {note}" for note in report.notes]
    if report.issues:
        lines.append("Skipped:")
        lines += issue_lines(report, None if verbose else FIRST_REASONS)
    return lines
