//! The documentation is also the agent's knowledge base, so it must cover what the product
//! offers: every host command has a section, every connector property and option is described
//! on its connector's page. Both lists come from the code, so the docs cannot drift silently.

use std::path::{Path, PathBuf};

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn read_all(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
            text.push('\n');
        }
    }
    text
}

#[test]
fn every_command_has_a_documented_section() {
    let text = read_all(&docs_dir().join("commands"));
    let missing: Vec<&str> = etl_engine::host::catalogue::COMMANDS
        .iter()
        .map(|c| c.name)
        .filter(|name| {
            !text.lines().any(|l| {
                l.trim_start_matches('#').trim().trim_matches('`') == *name && l.starts_with("##")
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "commands without a '## NAME' section under docs/commands/: {missing:?}"
    );
}

#[test]
fn every_connector_property_is_documented_on_its_page() {
    let registry = etlworks_agent::registry();
    let mut missing = Vec::new();
    for spec in registry.specs() {
        let page = docs_dir()
            .join("connectors")
            .join(format!("{}.md", spec.type_name));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("no docs page {}", page.display()));
        for (section, props) in [
            ("connection", spec.connection),
            ("source", spec.source),
            ("destination", spec.destination),
        ] {
            for p in props {
                if !text.contains(&format!("`{}`", p.name)) {
                    missing.push(format!(
                        "{}: {section} property `{}`",
                        spec.type_name, p.name
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented connector properties: {missing:#?}"
    );
}

#[test]
fn the_docs_name_no_property_that_does_not_exist() {
    // A `create connection ... type=T key=value` example must only use T's real properties.
    let registry = etlworks_agent::registry();
    let mut wrong = Vec::new();
    for entry in walk(&docs_dir()) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for line in text
            .lines()
            .filter(|l| l.contains("create connection ") && l.contains("type="))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(ty) = words.iter().find_map(|w| w.strip_prefix("type=")) else {
                continue;
            };
            let ty = ty.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let Some(spec) = registry.spec(ty) else {
                continue;
            };
            for w in &words {
                let Some((key, _)) = w.split_once('=') else {
                    continue;
                };
                let key = key.trim_start_matches(['`', '"', '\'', '(']);
                if matches!(key, "type" | "description" | "unset")
                    || key.is_empty()
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    continue;
                }
                if !spec.connection.iter().any(|p| p.matches(key)) {
                    wrong.push(format!(
                        "{}: '{key}' is not a {ty} connection property: {line}",
                        entry.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out
}
