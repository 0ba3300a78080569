//! Importing a template: parameter checks, name collisions, creating the connections and the
//! flow through the engine (so secrets are encrypted and everything is validated there), and
//! the report of what was created and what is still missing.
//!
//! Decisions, documented in docs/templates.md:
//! - A connection name already taken gets `_2`, `_3`, ...; an existing connection is reused
//!   instead when it has the same type and exactly the same properties and neither holds a
//!   secret (the engine never reveals secrets, so two connections with secrets cannot be
//!   proven identical). A taken flow name always gets a suffix.
//! - A required parameter without a value refuses the import, except when it only fills
//!   connection properties the connector does not require (typically a token or password):
//!   then the connection is created without them and the report gives the exact
//!   `update connection` command that completes it.
//! - If any step fails, the connections this import created are deleted again.

use std::collections::BTreeMap;

use etl_engine::secrets::is_secret;
use etl_engine::{Engine, EngineError, WAREHOUSE};
use serde::Serialize;

use crate::error::{MissingValue, TemplateError};
use crate::format::{Template, placeholders};
use crate::render::{Values, render};
use crate::validate::valid_object_name;

/// What happened to one connection the template needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionAction {
    /// Created by this import.
    Created,
    /// An identical connection already existed and the flow uses it.
    Reused,
    /// The tenant's built-in `warehouse`.
    BuiltIn,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImportedConnection {
    /// The name in the template.
    pub template_name: String,
    /// The name really used (differs after a collision).
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub action: ConnectionAction,
}

/// A parameter still without a value after an import that went ahead: the connection was
/// created without the property, and `fix` completes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MissingParameter {
    pub name: String,
    pub description: String,
    pub secret: bool,
    /// Host-language commands that set the value, one per property it fills, e.g.
    /// `update connection github token=<token>`.
    pub fix: Vec<String>,
}

/// What an import created.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImportReport {
    pub template: String,
    /// The flow's name (with a suffix when the requested one was taken).
    pub flow: String,
    /// The name asked for (the `name` argument, else the template's).
    pub requested_flow_name: String,
    pub connections: Vec<ImportedConnection>,
    /// The value of every parameter that has one; secrets as `***`.
    pub parameters: BTreeMap<String, String>,
    pub missing: Vec<MissingParameter>,
    /// What to do next, as host-language commands.
    pub next_steps: Vec<String>,
}

impl ImportReport {
    /// A few readable lines for the command line and the agent.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "imported template '{}': flow '{}'",
            self.template, self.flow
        );
        if self.flow != self.requested_flow_name {
            out.push_str(&format!(" ('{}' was taken)", self.requested_flow_name));
        }
        for c in &self.connections {
            let what = match c.action {
                ConnectionAction::Created => "created",
                ConnectionAction::Reused => "reused (identical)",
                ConnectionAction::BuiltIn => "built in",
            };
            out.push_str(&format!(
                "\n  connection '{}' ({}): {what}",
                c.name, c.type_name
            ));
            if c.name != c.template_name {
                out.push_str(&format!(" ('{}' was taken)", c.template_name));
            }
        }
        for m in &self.missing {
            out.push_str(&format!(
                "\n  missing parameter '{}' ({}): {}",
                m.name,
                m.description,
                m.fix.join("; ")
            ));
        }
        if !self.next_steps.is_empty() {
            out.push_str("\nnext: ");
            out.push_str(&self.next_steps.join("; "));
        }
        out
    }
}

/// How many numeric suffixes to try before giving up on a free name.
const MAX_SUFFIX: usize = 1000;

fn suffixed(base: &str, n: usize) -> String {
    if n == 1 {
        base.to_string()
    } else {
        format!("{base}_{n}")
    }
}

/// Given parameter values checked and merged with defaults.
pub(crate) fn resolve_values(
    t: &Template,
    given: &BTreeMap<String, String>,
) -> Result<Values, TemplateError> {
    let known: Vec<String> = t.parameters.iter().map(|p| p.name.clone()).collect();
    for name in given.keys() {
        if t.parameter(name).is_none() {
            return Err(TemplateError::UnknownParameter {
                template: t.id.clone(),
                name: name.clone(),
                suggestion: etl_model::nearest(name, known.iter().map(String::as_str))
                    .map(str::to_string),
                known: known.clone(),
            });
        }
    }
    let mut values = Values::new();
    for p in &t.parameters {
        let value = match given.get(&p.name).filter(|v| !v.trim().is_empty()) {
            Some(v) => {
                Some(
                    p.kind
                        .check(v)
                        .map_err(|expected| TemplateError::WrongParameterType {
                            name: p.name.clone(),
                            expected: expected.to_string(),
                            value: if p.secret { "***".into() } else { v.clone() },
                        })?,
                )
            }
            None => p.default.clone(),
        };
        values.insert(p.name.clone(), value);
    }
    Ok(values)
}

/// Where a missing parameter can be left for later: connection properties (connection name,
/// property) that consist of the placeholder alone and that the connector does not require.
/// `None` when any use of it cannot wait.
fn deferrable_uses(t: &Template, engine: &Engine, param: &str) -> Option<Vec<(String, String)>> {
    let mut uses = Vec::new();
    for c in &t.connections {
        let spec = engine.registry().spec(&c.type_name);
        for (key, value) in &c.properties {
            let found = placeholders(value).unwrap_or_default();
            if !found.iter().any(|(_, _, n)| *n == param) {
                continue;
            }
            let alone = matches!(found.as_slice(), [(0, end, _)] if *end == value.len());
            let required = spec
                .and_then(|s| s.connection.iter().find(|p| p.matches(key)))
                .is_some_and(|p| p.required);
            if !alone || required {
                return None;
            }
            uses.push((c.name.clone(), key.clone()));
        }
    }
    let f = &t.flow;
    let mut flow_texts: Vec<&str> = vec![&f.source.object, &f.destination.target];
    flow_texts.extend(f.source.options.values().map(String::as_str));
    flow_texts.extend(f.destination.options.values().map(String::as_str));
    flow_texts.extend(f.keys.iter().map(String::as_str));
    flow_texts.extend(f.incremental.as_deref());
    flow_texts.extend(f.mapping.filter.as_deref());
    flow_texts.extend(f.mapping.constants.values().map(String::as_str));
    let in_flow = flow_texts.iter().any(|text| {
        placeholders(text)
            .unwrap_or_default()
            .iter()
            .any(|(_, _, n)| *n == param)
    });
    (!in_flow).then_some(uses)
}

fn engine_error(t: &Template, step: String, source: EngineError) -> TemplateError {
    TemplateError::Engine {
        template: t.id.clone(),
        step,
        source,
    }
}

/// Whether an existing connection can stand in for the one the template would create.
fn identical(
    engine: &Engine,
    existing: &etl_engine::Connection,
    type_name: &str,
    props: &etl_model::Props,
) -> bool {
    let spec = engine.registry().spec(type_name);
    let has_secret =
        |p: &etl_model::Props| p.0.iter().any(|(k, v)| !v.is_empty() && is_secret(spec, k));
    existing.type_name == type_name
        && !has_secret(&existing.props)
        && !has_secret(props)
        && existing.props == *props
}

pub(crate) async fn import(
    t: &Template,
    engine: &Engine,
    tenant: &str,
    name: Option<&str>,
    given: &BTreeMap<String, String>,
) -> Result<ImportReport, TemplateError> {
    if let Some(n) = name
        && !valid_object_name(n)
    {
        return Err(TemplateError::InvalidName {
            name: n.to_string(),
        });
    }
    let values = resolve_values(t, given)?;

    // Required parameters without value: leave for later or refuse.
    let mut refuse = Vec::new();
    let mut deferred = Vec::new();
    for p in t.parameters.iter().filter(|p| p.required) {
        if values.get(&p.name).is_some_and(Option::is_some) {
            continue;
        }
        match deferrable_uses(t, engine, &p.name) {
            Some(uses) => deferred.push((p, uses)),
            None => refuse.push(MissingValue {
                name: p.name.clone(),
                description: p.description.clone(),
                example: p.example.clone().unwrap_or_else(|| format!("<{}>", p.name)),
            }),
        }
    }
    if !refuse.is_empty() {
        return Err(TemplateError::MissingParameters {
            template: t.id.clone(),
            missing: refuse,
        });
    }

    let uses_warehouse =
        t.flow.source.connection == WAREHOUSE || t.flow.destination.connection == WAREHOUSE;
    if uses_warehouse {
        engine
            .ensure_warehouse(tenant)
            .await
            .map_err(|e| engine_error(t, "preparing the built-in warehouse".into(), e))?;
    }

    // Connections: reuse an identical one, or create under a free name.
    let draft = render(t, &values, &BTreeMap::new());
    let mut names = BTreeMap::new();
    let mut imported = Vec::new();
    let mut created: Vec<String> = Vec::new();
    for c in &draft.connections {
        let outcome = place_connection(engine, tenant, c).await;
        match outcome {
            Ok((actual, action)) => {
                if action == ConnectionAction::Created {
                    created.push(actual.clone());
                }
                names.insert(c.name.clone(), actual.clone());
                imported.push(ImportedConnection {
                    template_name: c.name.clone(),
                    name: actual,
                    type_name: c.type_name.clone(),
                    action,
                });
            }
            Err(e) => {
                rollback(engine, tenant, &created).await;
                return Err(engine_error(
                    t,
                    format!("creating connection '{}' ({})", c.name, c.type_name),
                    e,
                ));
            }
        }
    }
    if uses_warehouse {
        imported.push(ImportedConnection {
            template_name: WAREHOUSE.into(),
            name: WAREHOUSE.into(),
            type_name: "sqlite".into(),
            action: ConnectionAction::BuiltIn,
        });
    }

    // The flow, under a free name.
    let rendered = render(t, &values, &names);
    let requested = name.unwrap_or(&rendered.flow_name).to_string();
    let flow = match place_flow(engine, tenant, &requested, &rendered).await {
        Ok(f) => f,
        Err(e) => {
            rollback(engine, tenant, &created).await;
            return Err(engine_error(t, format!("creating flow '{requested}'"), e));
        }
    };

    let missing: Vec<MissingParameter> = deferred
        .into_iter()
        .map(|(p, uses)| MissingParameter {
            name: p.name.clone(),
            description: p.description.clone(),
            secret: p.secret,
            fix: uses
                .iter()
                .map(|(conn, key)| {
                    let actual = names.get(conn).unwrap_or(conn);
                    format!("update connection {actual} {key}=<{}>", p.name)
                })
                .collect(),
        })
        .collect();
    let parameters = t
        .parameters
        .iter()
        .filter_map(|p| {
            let v = values.get(&p.name)?.as_ref()?;
            Some((
                p.name.clone(),
                if p.secret { "***".into() } else { v.clone() },
            ))
        })
        .collect();
    let mut next_steps: Vec<String> = missing.iter().flat_map(|m| m.fix.clone()).collect();
    for c in imported
        .iter()
        .filter(|c| c.action == ConnectionAction::Created)
    {
        next_steps.push(format!("test connection {}", c.name));
    }
    next_steps.push(format!("run flow {} --wait", flow.name));
    Ok(ImportReport {
        template: t.id.clone(),
        flow: flow.name,
        requested_flow_name: requested,
        connections: imported,
        parameters,
        missing,
        next_steps,
    })
}

async fn place_connection(
    engine: &Engine,
    tenant: &str,
    c: &crate::render::RenderedConnection,
) -> Result<(String, ConnectionAction), EngineError> {
    for n in 1..=MAX_SUFFIX {
        let candidate = suffixed(&c.name, n);
        // The stored form: secrets stay encrypted, and `identical` never reuses those anyway.
        match engine.connection_raw(tenant, &candidate).await {
            Ok(existing) => {
                if identical(engine, &existing, &c.type_name, &c.props) {
                    return Ok((existing.name, ConnectionAction::Reused));
                }
                continue;
            }
            Err(e) if e.code == "not_found" => {}
            Err(e) => return Err(e),
        }
        match engine
            .create_connection(
                tenant,
                &candidate,
                &c.type_name,
                c.props.clone(),
                &c.description,
            )
            .await
        {
            Ok(conn) => return Ok((conn.name, ConnectionAction::Created)),
            // Someone took the name between the check and the insert: try the next one.
            Err(e) if e.code == "conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(EngineError::conflict(format!(
        "connections '{}' to '{}' all exist; delete some or import with other names",
        c.name,
        suffixed(&c.name, MAX_SUFFIX)
    )))
}

async fn place_flow(
    engine: &Engine,
    tenant: &str,
    requested: &str,
    r: &crate::render::Rendered,
) -> Result<etl_engine::Flow, EngineError> {
    // Validate once up front so a broken flow is reported as such, not as a name problem.
    engine.validate_flow(tenant, &r.spec).await?;
    for n in 1..=MAX_SUFFIX {
        let candidate = suffixed(requested, n);
        match engine.flow(tenant, &candidate).await {
            Ok(_) => continue,
            Err(e) if e.code == "not_found" => {}
            Err(e) => return Err(e),
        }
        match engine
            .create_flow(tenant, &candidate, r.spec.clone(), &r.flow_description)
            .await
        {
            Ok(f) => return Ok(f),
            Err(e) if e.code == "conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(EngineError::conflict(format!(
        "flows '{requested}' to '{}' all exist; import with another name",
        suffixed(requested, MAX_SUFFIX)
    )))
}

/// Deletes what a failed import created. A failure to delete is ignored: the error that made
/// the import fail is the one the person must act on, and a leftover connection is harmless.
async fn rollback(engine: &Engine, tenant: &str, created: &[String]) {
    for name in created {
        let _ = engine.delete_connection(tenant, name).await;
    }
}
