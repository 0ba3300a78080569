//! The documentation page is the agent's knowledge base: every property of the spec must be in
//! its section of docs/connectors/file.md.

use etl_file::FileConnector;
use etl_model::PropSpec;

fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("docs/connectors/file.md lacks the section '{heading}'"));
    let rest = &page[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

fn check(page: &str, heading: &str, specs: &[PropSpec]) {
    let text = section(page, heading);
    for spec in specs {
        let row = format!("| `{}` |", spec.name);
        assert!(
            text.contains(&row),
            "'{heading}' in docs/connectors/file.md has no table row for `{}`",
            spec.name
        );
        if let Some(default) = spec.default {
            let line = text.lines().find(|l| l.starts_with(&row)).unwrap();
            assert!(
                line.contains(&format!("`{default}`")),
                "the docs row for `{}` does not give its default `{default}`: {line}",
                spec.name
            );
        }
    }
}

#[test]
fn every_property_is_documented() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../docs/connectors/file.md"
    );
    let page = std::fs::read_to_string(path).expect("docs/connectors/file.md exists");
    let spec = FileConnector::spec();
    check(&page, "## Connection properties", spec.connection);
    check(&page, "## Source options", spec.source);
    check(&page, "## Destination options", spec.destination);
    for placeholder in ["{run_id}", "{date}", "{time}", "{timestamp}"] {
        assert!(
            page.contains(&format!("`{placeholder}`")),
            "{placeholder} undocumented"
        );
    }
}
