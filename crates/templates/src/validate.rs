//! Load-time checks of a template: its shape (ids, names, parameters, placeholders, flow) on
//! its own, and, given the connector registry, that every property and option it sets is one
//! the connector really takes. A template that fails here is never offered for import.

use std::collections::{BTreeMap, BTreeSet};

use etl_engine::Registry;
use etl_engine::expr::Expr;
use etl_model::{ColumnType, WriteMode};

use crate::format::{Template, placeholders};
use crate::render::{Values, render};

/// The name of the built-in connection every tenant has.
pub(crate) const WAREHOUSE: &str = etl_engine::WAREHOUSE;

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn is_snake(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The engine's rule for connection and flow names.
pub(crate) fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Every problem with the template on its own, in reading order.
pub(crate) fn shape_problems(t: &Template, file_stem: Option<&str>) -> Vec<String> {
    let mut p = Vec::new();
    if !is_kebab(&t.id) {
        p.push(format!(
            "id '{}' must be kebab-case (lowercase letters and digits joined by '-')",
            t.id
        ));
    }
    if let Some(stem) = file_stem
        && stem != t.id
    {
        p.push(format!(
            "id '{}' must equal the file name without .yaml ('{stem}')",
            t.id
        ));
    }
    for (field, value) in [
        ("name", &t.name),
        ("description", &t.description),
        ("source_system", &t.source_system),
        ("destination_system", &t.destination_system),
    ] {
        if value.trim().is_empty() {
            p.push(format!("'{field}' must not be empty"));
        }
    }
    for tag in &t.tags {
        if tag.trim().is_empty() || tag.chars().any(|c| c.is_ascii_uppercase()) {
            p.push(format!("tag '{tag}' must be non-empty lowercase text"));
        }
    }

    // Parameters.
    let mut declared = BTreeSet::new();
    for param in &t.parameters {
        let n = &param.name;
        if !is_snake(n) {
            p.push(format!(
                "parameter '{n}' must be snake_case (lowercase letters, digits and '_')"
            ));
        }
        if n == "name" {
            p.push(
                "parameter 'name' is reserved for the imported flow's name; call it something else"
                    .into(),
            );
        }
        if !declared.insert(n.as_str()) {
            p.push(format!("parameter '{n}' is declared twice"));
        }
        if param.description.trim().is_empty() {
            p.push(format!("parameter '{n}' needs a description"));
        }
        for (what, v) in [("default", &param.default), ("example", &param.example)] {
            if let Some(v) = v
                && let Err(expected) = param.kind.check(v)
            {
                p.push(format!("parameter '{n}': {what} '{v}' is not {expected}"));
            }
        }
        if param.secret && param.default.is_some() {
            p.push(format!(
                "parameter '{n}' is secret and must not have a default (it would be published in the template)"
            ));
        }
        if param.required && param.default.is_some() {
            p.push(format!(
                "parameter '{n}' has a default, so it cannot also be required; remove one"
            ));
        }
        if param.required && param.example.is_none() {
            p.push(format!("required parameter '{n}' needs an example value"));
        }
    }

    // Placeholders: where they may appear, and that each names a declared parameter.
    let mut used = BTreeSet::new();
    let mut texts: Vec<(String, &str)> = Vec::new();
    for c in &t.connections {
        for (k, v) in &c.properties {
            texts.push((format!("connection '{}' property '{k}'", c.name), v));
        }
    }
    let f = &t.flow;
    texts.push(("flow source object".into(), &f.source.object));
    texts.push(("flow destination target".into(), &f.destination.target));
    for (k, v) in &f.source.options {
        texts.push((format!("flow source option '{k}'"), v));
    }
    for (k, v) in &f.destination.options {
        texts.push((format!("flow destination option '{k}'"), v));
    }
    for k in &f.keys {
        texts.push(("flow keys".into(), k));
    }
    if let Some(i) = &f.incremental {
        texts.push(("flow incremental".into(), i));
    }
    if let Some(x) = &f.mapping.filter {
        texts.push(("mapping filter".into(), x));
    }
    for (k, v) in &f.mapping.constants {
        texts.push((format!("mapping constant '{k}'"), v));
    }
    for (place, text) in &texts {
        match placeholders(text) {
            Err(e) => p.push(format!("{place}: {e}")),
            Ok(found) => {
                for (_, _, name) in found {
                    if declared.contains(name) {
                        used.insert(name.to_string());
                    } else {
                        p.push(format!(
                            "{place} uses '{{{{{name}}}}}' but no parameter '{name}' is declared"
                        ));
                    }
                }
            }
        }
    }
    // Structural fields take no placeholders: they decide what the template is.
    let mut literal: Vec<(String, &str)> = vec![
        ("flow name".into(), &f.name),
        ("flow source connection".into(), &f.source.connection),
        (
            "flow destination connection".into(),
            &f.destination.connection,
        ),
    ];
    if let Some(m) = &f.mode {
        literal.push(("flow mode".into(), m));
    }
    for c in &t.connections {
        literal.push(("connection name".into(), &c.name));
        literal.push((format!("connection '{}' type", c.name), &c.type_name));
        for k in c.properties.keys() {
            literal.push((format!("connection '{}' property name", c.name), k));
        }
    }
    for (a, b) in &f.mapping.rename {
        literal.push(("mapping rename".into(), a));
        literal.push(("mapping rename".into(), b));
    }
    for x in &f.mapping.exclude {
        literal.push(("mapping exclude".into(), x));
    }
    for (place, text) in literal {
        if text.contains("{{") {
            p.push(format!("{place} '{text}' cannot hold a placeholder"));
        }
    }
    for param in &t.parameters {
        if !used.contains(&param.name) {
            p.push(format!(
                "parameter '{}' is declared but never used",
                param.name
            ));
        }
    }

    // Connections.
    let mut conn_names = BTreeSet::new();
    for c in &t.connections {
        if !valid_object_name(&c.name) {
            p.push(format!(
                "connection name '{}' must use letters, digits, '_', '-' or '.'",
                c.name
            ));
        }
        if c.name == WAREHOUSE {
            p.push("a template must not create 'warehouse': name it in the flow instead, the built-in connection exists in every tenant".into());
        }
        if !conn_names.insert(c.name.as_str()) {
            p.push(format!("connection '{}' is declared twice", c.name));
        }
    }

    // The flow.
    if !valid_object_name(&f.name) {
        p.push(format!(
            "flow name '{}' must use letters, digits, '_', '-' or '.'",
            f.name
        ));
    }
    let mut referenced = BTreeSet::new();
    for (side, conn) in [
        ("source", &f.source.connection),
        ("destination", &f.destination.connection),
    ] {
        if conn != WAREHOUSE && !conn_names.contains(conn.as_str()) {
            p.push(format!(
                "flow {side} connection '{conn}' is neither one of the template's connections nor '{WAREHOUSE}'"
            ));
        }
        referenced.insert(conn.as_str());
    }
    for c in &t.connections {
        if !referenced.contains(c.name.as_str()) {
            p.push(format!("connection '{}' is not used by the flow", c.name));
        }
    }
    if f.destination.target.trim().is_empty() {
        p.push("flow destination target must not be empty".into());
    }
    if f.source.object.trim().is_empty() && !f.source.options.contains_key("query") {
        p.push("flow source object must not be empty (or set the query option)".into());
    }
    let mode = match f.mode.as_deref() {
        None => Some(WriteMode::Append),
        Some(m) => {
            let parsed = WriteMode::parse(m);
            if parsed.is_none() {
                p.push(format!("flow mode '{m}' must be append, replace or merge"));
            }
            parsed
        }
    };
    if mode == Some(WriteMode::Merge) && f.keys.is_empty() {
        p.push("flow mode merge needs keys".into());
    }
    for (col, ty) in &f.mapping.casts {
        if ColumnType::parse(ty).is_none() {
            p.push(format!(
                "mapping cast of '{col}' to '{ty}': use integer, float, boolean, text, date, timestamp or json"
            ));
        }
    }
    if f.batch_size == Some(0) {
        p.push("flow batch_size must be at least 1".into());
    }
    if let Some(filter) = &f.mapping.filter {
        // Check the filter as it will be with example values filled in.
        let sample = render(t, &example_values(t), &BTreeMap::new());
        let text = sample.spec.mapping.filter.unwrap_or_default();
        if !text.is_empty()
            && let Err(e) = Expr::parse(&text)
        {
            p.push(format!("mapping filter '{filter}': {e}"));
        }
    }
    p
}

/// Each parameter's example, else its default: what the gallery's own checks import with.
pub(crate) fn example_values(t: &Template) -> Values {
    t.parameters
        .iter()
        .map(|p| {
            let v = p.example.clone().or_else(|| p.default.clone());
            (p.name.clone(), v.map(|v| p.kind.check(&v).unwrap_or(v)))
        })
        .collect()
}

/// Problems found by checking the template, filled with example values, against the
/// connector specs the engine validates with.
pub(crate) fn spec_problems(t: &Template, registry: &Registry) -> Vec<String> {
    let mut p = Vec::new();
    let r = render(t, &example_values(t), &BTreeMap::new());
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    types.insert(WAREHOUSE, "sqlite");
    for c in &r.connections {
        match registry.get(&c.type_name) {
            Err(e) => p.push(format!("connection '{}': {}", c.name, e.message)),
            Ok(conn) => {
                types.insert(&c.name, conn.spec().type_name);
                for e in conn.spec().validate_connection(&c.props) {
                    p.push(format!("connection '{}': {e}", c.name));
                }
            }
        }
    }
    for (side, ep, reading) in [
        ("source", &r.spec.source, true),
        ("destination", &r.spec.destination, false),
    ] {
        let Some(spec) = types
            .get(ep.connection.as_str())
            .and_then(|ty| registry.spec(ty))
        else {
            continue;
        };
        if reading && !spec.can_read {
            p.push(format!(
                "flow {side}: a {} connection cannot be read from",
                spec.type_name
            ));
        }
        if !reading && !spec.can_write {
            p.push(format!(
                "flow {side}: a {} connection cannot be written to",
                spec.type_name
            ));
        }
        let errors = if reading {
            spec.validate_source(&ep.options)
        } else {
            spec.validate_destination(&ep.options)
        };
        p.extend(
            errors
                .into_iter()
                .map(|e| format!("flow {side} option {e}")),
        );
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(is_kebab("github-issues-to-postgres"));
        assert!(!is_kebab("GitHub-issues"));
        assert!(!is_kebab("a--b"));
        assert!(!is_kebab(""));
        assert!(is_snake("api_url2"));
        assert!(!is_snake("2url"));
        assert!(valid_object_name("gh_issues.v2-x"));
        assert!(!valid_object_name("has space"));
    }
}
