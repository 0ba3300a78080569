//! Turning a template plus parameter values into the concrete connections and flow spec the
//! engine takes. Shared by the import and by the gallery's checks, so both see the same result.

use std::collections::BTreeMap;

use etl_engine::{Endpoint, FlowSpec, Mapping};
use etl_model::{ColumnType, Props, WriteMode};

use crate::format::{Template, placeholders};

/// Parameter values after defaults: `None` means "no value" (an optional parameter left empty,
/// or a required one nobody gave).
pub(crate) type Values = BTreeMap<String, Option<String>>;

pub(crate) struct RenderedConnection {
    /// The name in the template (before any collision suffix).
    pub name: String,
    pub type_name: String,
    pub props: Props,
    pub description: String,
}

pub(crate) struct Rendered {
    pub connections: Vec<RenderedConnection>,
    pub flow_name: String,
    pub flow_description: String,
    pub spec: FlowSpec,
}

/// `text` with its placeholders filled. A text that is exactly one placeholder of a parameter
/// without value gives `None`, so the property or option is left out rather than set empty;
/// inside a longer text such a placeholder becomes the empty string.
pub(crate) fn fill(text: &str, values: &Values) -> Option<String> {
    let Ok(found) = placeholders(text) else {
        // Validation rejects unclosed placeholders at load; keep the text as written.
        return Some(text.to_string());
    };
    if let [(0, end, name)] = found.as_slice()
        && *end == text.len()
    {
        return values.get(*name).cloned().flatten();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, name) in found {
        out.push_str(&text[last..start]);
        if let Some(Some(v)) = values.get(name) {
            out.push_str(v);
        }
        last = end;
    }
    out.push_str(&text[last..]);
    Some(out)
}

fn fill_map(map: &BTreeMap<String, String>, values: &Values) -> Props {
    Props(
        map.iter()
            .filter_map(|(k, v)| fill(v, values).map(|v| (k.clone(), v)))
            .collect(),
    )
}

/// Comma-separated lists given through one parameter (`keys: ["{{key_columns}}"]` with
/// `key_columns=id,tenant`) become several entries.
fn fill_list(list: &[String], values: &Values) -> Vec<String> {
    list.iter()
        .filter_map(|k| fill(k, values))
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The template with `values` filled in. `connection_names` maps template connection names to
/// the names really used (after collision suffixes); unmapped names are kept.
pub(crate) fn render(
    t: &Template,
    values: &Values,
    connection_names: &BTreeMap<String, String>,
) -> Rendered {
    let rename_conn = |n: &str| {
        connection_names
            .get(n)
            .cloned()
            .unwrap_or_else(|| n.to_string())
    };
    let connections = t
        .connections
        .iter()
        .map(|c| RenderedConnection {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
            props: fill_map(&c.properties, values),
            description: c.description.clone(),
        })
        .collect();
    let f = &t.flow;
    let m = &f.mapping;
    let mapping = Mapping {
        filter: m
            .filter
            .as_deref()
            .and_then(|x| fill(x, values))
            .filter(|x| !x.trim().is_empty()),
        rename: m
            .rename
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
        exclude: m.exclude.clone(),
        constants: m
            .constants
            .iter()
            .filter_map(|(k, v)| fill(v, values).map(|v| (k.clone(), v)))
            .collect(),
        // Validation guarantees every cast names a known type.
        casts: m
            .casts
            .iter()
            .filter_map(|(c, ty)| ColumnType::parse(ty).map(|ty| (c.clone(), ty)))
            .collect(),
    };
    let spec = FlowSpec {
        source: Endpoint {
            connection: rename_conn(&f.source.connection),
            object: fill(&f.source.object, values).unwrap_or_default(),
            options: fill_map(&f.source.options, values),
        },
        destination: Endpoint {
            connection: rename_conn(&f.destination.connection),
            object: fill(&f.destination.target, values).unwrap_or_default(),
            options: fill_map(&f.destination.options, values),
        },
        mode: f
            .mode
            .as_deref()
            .and_then(WriteMode::parse)
            .unwrap_or_default(),
        keys: fill_list(&f.keys, values),
        create: true,
        incremental: f
            .incremental
            .as_deref()
            .and_then(|x| fill(x, values))
            .filter(|x| !x.trim().is_empty()),
        mapping,
        batch_size: f.batch_size,
    };
    Rendered {
        connections,
        flow_name: f.name.clone(),
        flow_description: f.description.clone(),
        spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, Option<&str>)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn fills_and_omits() {
        let v = values(&[("owner", Some("rust-lang")), ("token", None)]);
        assert_eq!(
            fill("/repos/{{owner}}/issues", &v).as_deref(),
            Some("/repos/rust-lang/issues")
        );
        assert_eq!(fill("{{token}}", &v), None);
        assert_eq!(fill("Bearer {{token}}", &v).as_deref(), Some("Bearer "));
        assert_eq!(fill("plain", &v).as_deref(), Some("plain"));
    }

    #[test]
    fn splits_list_parameters() {
        let v = values(&[("k", Some("id, tenant"))]);
        assert_eq!(
            fill_list(&["{{k}}".to_string(), "x".to_string()], &v),
            vec!["id", "tenant", "x"]
        );
    }
}
