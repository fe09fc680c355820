"""docs/load-test.md is written by three measurements: each keeps the others' sections."""

from scripts.report_sections import write_keeping_sections, write_section


def test_a_section_is_added_then_replaced_and_survives_a_rewrite_of_the_page(tmp_path):
    page = tmp_path / "load-test.md"
    page.write_text("# Load test\n\nfigures\n")

    write_section(page, "export-load", "## Export\n\n10k rows")
    write_section(page, "served-check", "## Served\n\nno 5xx")
    write_section(page, "export-load", "## Export\n\n250k rows")
    write_keeping_sections(page, "# Load test\n\nnew figures\n")

    assert page.read_text() == (
        "# Load test\n\nnew figures\n\n"
        "<!-- export-load -->\n## Export\n\n250k rows\n<!-- /export-load -->\n\n"
        "<!-- served-check -->\n## Served\n\nno 5xx\n<!-- /served-check -->\n"
    )
