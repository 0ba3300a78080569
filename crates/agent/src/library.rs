//! The knowledge base and the template gallery as the product offers them: one place that turns
//! their answers into JSON and readable text, used by the tools (`search_knowledge_base`,
//! `search_templates`, `import_template`, `diagnose_flow`) and by the host language's
//! `search kb`, `search templates`, `get template`, `import template`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use etl_engine::host::{Caller, Extensions};
use etl_engine::{Engine, EngineError, EngineResult};
use etl_kb::{Hit, KbError, KbErrorKind, KnowledgeBase};
use etl_templates::{Gallery, TemplateError};
use serde_json::{Value as Json, json};

/// Results at most per search.
pub const MAX_LIMIT: usize = 50;

pub struct Library {
    pub kb: Arc<KnowledgeBase>,
    pub gallery: Arc<Gallery>,
    engine: Engine,
}

impl Library {
    pub fn new(engine: Engine, kb: Arc<KnowledgeBase>, gallery: Arc<Gallery>) -> Library {
        Library {
            kb,
            gallery,
            engine,
        }
    }

    /// Ranked knowledge-base passages for the tenant (bundled docs and its own documents).
    pub fn search_kb(
        &self,
        tenant: &str,
        query: &str,
        limit: usize,
    ) -> EngineResult<(Json, String)> {
        if query.trim().is_empty() {
            return Err(EngineError::invalid(
                "the query is empty; say what you are looking for, e.g. 'merge mode keys'",
            ));
        }
        let hits = self
            .kb
            .search(tenant, query, limit.clamp(1, MAX_LIMIT))
            .map_err(kb_error)?;
        let data = json!({"query": query, "results": hits.iter().map(hit_json).collect::<Vec<_>>(), "count": hits.len()});
        let text = if hits.is_empty() {
            format!(
                "Nothing in the knowledge base matches '{}'. Try other words, or 'list commands' and 'list connection-types' for what exists.",
                shorten(query, 80)
            )
        } else {
            hits.iter()
                .enumerate()
                .map(|(i, h)| {
                    format!(
                        "{}. {} [{}]\n   {}",
                        i + 1,
                        h.path.join(" > "),
                        h.citation(),
                        h.snippet.replace('\n', " ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok((data, text))
    }

    pub fn search_templates(&self, query: &str, limit: usize) -> (Json, String) {
        let hits = self.gallery.search(query, limit.clamp(1, MAX_LIMIT));
        let data = json!({"query": query, "results": hits, "count": hits.len()});
        let text = if hits.is_empty() {
            format!(
                "No template matches '{}'; 'search templates' with a few words about the source and destination (e.g. 'csv to postgres') lists the closest ones.",
                shorten(query, 80)
            )
        } else {
            let mut t = hits
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    format!(
                        "{}. {} ({}): {} → {}\n   {}",
                        i + 1,
                        h.name,
                        h.id,
                        h.source_system,
                        h.destination_system,
                        shorten(&h.description, 200)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            t.push_str(&format!(
                "\nImport one with: import template {} [PARAMETER=VALUE ...]",
                hits[0].id
            ));
            t
        };
        (data, text)
    }

    pub fn get_template(&self, id: &str) -> EngineResult<(Json, String)> {
        let t = self.gallery.get(id).map_err(template_error)?;
        let mut text = format!(
            "{} ({})\n{}\n{} → {}\n",
            t.name, t.id, t.description, t.source_system, t.destination_system
        );
        if !t.parameters.is_empty() {
            text.push_str("\nParameters:\n");
            for p in &t.parameters {
                let mut notes = vec![p.kind.as_str().to_string()];
                if p.required {
                    notes.push("required".into());
                }
                if p.secret {
                    notes.push("secret".into());
                }
                if let Some(d) = &p.default {
                    notes.push(format!("default {d}"));
                }
                text.push_str(&format!(
                    "- {} ({}): {}\n",
                    p.name,
                    notes.join(", "),
                    p.description
                ));
            }
        }
        text.push_str(&format!(
            "\nImport it with: import template {} [name=FLOW] [PARAMETER=VALUE ...]",
            t.id
        ));
        let data = serde_json::to_value(t).expect("templates serialize");
        Ok((data, text))
    }

    pub async fn import_template(
        &self,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> EngineResult<(Json, String)> {
        let report = self
            .gallery
            .import(&self.engine, tenant, id, name, params)
            .await
            .map_err(template_error)?;
        let text = report.summary();
        Ok((
            serde_json::to_value(&report).expect("reports serialize"),
            text,
        ))
    }
}

fn hit_json(h: &Hit) -> Json {
    json!({
        "title": h.path.last().cloned().unwrap_or_else(|| h.title.clone()),
        "document": h.title,
        "path": h.path,
        "source": h.source,
        "anchor": h.anchor,
        "citation": h.citation(),
        "snippet": h.snippet,
        "text": h.text,
        "score": h.score,
        "bundled": h.bundled,
    })
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn kb_error(e: KbError) -> EngineError {
    let code = match e.kind() {
        KbErrorKind::InvalidInput => "invalid",
        KbErrorKind::TooLarge => "too_large",
        KbErrorKind::Busy => "busy",
        _ => "internal",
    };
    EngineError::new(code, e.to_string())
}

fn template_error(e: TemplateError) -> EngineError {
    EngineError::new(e.code(), e.to_string())
}

#[async_trait]
impl Extensions for Library {
    async fn search_kb(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
    ) -> EngineResult<(Json, String)> {
        Library::search_kb(self, &caller.tenant, query, limit)
    }
    async fn search_templates(
        &self,
        _caller: &Caller,
        query: &str,
        limit: usize,
    ) -> EngineResult<(Json, String)> {
        Ok(Library::search_templates(self, query, limit))
    }
    async fn get_template(&self, _caller: &Caller, id: &str) -> EngineResult<(Json, String)> {
        Library::get_template(self, id)
    }
    async fn import_template(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> EngineResult<(Json, String)> {
        Library::import_template(self, &caller.tenant, id, name, params).await
    }
}

impl Library {
    /// Passages as JSON for embedding in other answers; a failing search gives none (logged).
    pub fn passages(&self, tenant: &str, query: &str, limit: usize) -> Vec<Json> {
        match self.kb.search(tenant, query, limit) {
            Ok(hits) => hits.iter().map(hit_json).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "knowledge-base search failed");
                Vec::new()
            }
        }
    }
}
