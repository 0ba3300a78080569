//! The flow-template gallery: ready-made combinations of connections and a flow ("GitHub
//! issues to PostgreSQL", "CSV files into MySQL") written as YAML under `templates/`,
//! embedded in the binary, validated when loaded, searchable, and imported through the
//! engine so every connection and flow is validated and every secret encrypted.
//!
//! ```no_run
//! # async fn demo(engine: &etl_engine::Engine) -> Result<(), etl_templates::TemplateError> {
//! use std::collections::BTreeMap;
//! let gallery = etl_templates::Gallery::bundled()?;
//! let hits = gallery.search("github issues to postgres", 5);
//! let params = BTreeMap::from([
//!     ("owner".to_string(), "rust-lang".to_string()),
//!     ("repo".to_string(), "rust".to_string()),
//!     ("postgres_database".to_string(), "analytics".to_string()),
//! ]);
//! let report = gallery.import(engine, "default", &hits[0].id, None, &params).await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```
//!
//! The format and the import rules (name collisions, missing parameters, secrets) are
//! documented in `docs/templates.md`.

mod error;
mod format;
mod import;
mod render;
mod search;
mod validate;

use std::collections::BTreeMap;

use etl_engine::{Engine, Registry};
use include_dir::{Dir, include_dir};

pub use error::{MissingValue, TemplateError};
pub use format::{
    ConnectionTemplate, DestinationTemplate, FlowTemplate, MappingTemplate, ParamType, Parameter,
    SourceTemplate, Template,
};
pub use import::{ConnectionAction, ImportReport, ImportedConnection, MissingParameter};
pub use search::SearchHit;

static BUNDLED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");

/// A set of validated templates, sorted by id.
pub struct Gallery {
    templates: Vec<Template>,
    index: Vec<search::Indexed>,
}

impl Gallery {
    /// The templates shipped in the binary. Each is checked on load; the crate's tests load
    /// them too, so a broken bundled template fails the build's tests rather than a user.
    pub fn bundled() -> Result<Gallery, TemplateError> {
        let files = BUNDLED
            .files()
            .filter(|f| f.path().extension().is_some_and(|e| e == "yaml"))
            .map(|f| {
                let name = f.path().to_string_lossy().into_owned();
                let text = f.contents_utf8().ok_or_else(|| TemplateError::Invalid {
                    file: name.clone(),
                    problems: vec!["the file is not UTF-8 text".into()],
                })?;
                Ok((name, text))
            })
            .collect::<Result<Vec<_>, TemplateError>>()?;
        Gallery::from_files(files.iter().map(|(n, t)| (n.as_str(), *t)))
    }

    /// Templates from `(file name, YAML text)` pairs; the file name (`x.yaml`) must match the
    /// template's id. Fails on the first invalid file, listing all of its problems.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Gallery, TemplateError> {
        let mut templates: Vec<Template> = Vec::new();
        for (file, text) in files {
            let t = Gallery::parse(file, text)?;
            if templates.iter().any(|o| o.id == t.id) {
                return Err(TemplateError::Invalid {
                    file: file.to_string(),
                    problems: vec![format!("another template already has id '{}'", t.id)],
                });
            }
            templates.push(t);
        }
        templates.sort_by(|a, b| a.id.cmp(&b.id));
        let index = templates.iter().map(search::Indexed::new).collect();
        Ok(Gallery { templates, index })
    }

    /// One template from YAML text, checked on its own (not yet against connector specs).
    pub fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
        let invalid = |problems| TemplateError::Invalid {
            file: file.to_string(),
            problems,
        };
        let t: Template = serde_saphyr::from_str(text).map_err(|e| invalid(vec![e.to_string()]))?;
        let stem = std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let problems = validate::shape_problems(&t, stem.as_deref());
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(invalid(problems))
        }
    }

    /// Checks every template against the connector specs the engine validates with: known
    /// connector types, known properties and options of the right types, required ones set.
    pub fn check_connectors(&self, registry: &Registry) -> Result<(), TemplateError> {
        for t in &self.templates {
            let problems = validate::spec_problems(t, registry);
            if !problems.is_empty() {
                return Err(TemplateError::Invalid {
                    file: format!("{}.yaml", t.id),
                    problems,
                });
            }
        }
        Ok(())
    }

    /// Every template, sorted by id.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The template with this id; an unknown id answers the nearest ones.
    pub fn get(&self, id: &str) -> Result<&Template, TemplateError> {
        let wanted = id.trim();
        if let Some(t) = self.templates.iter().find(|t| t.id == wanted) {
            return Ok(t);
        }
        // Edit distance is quadratic: only worth it for something id-sized.
        let mut suggestions: Vec<String> = if wanted.len() <= 128 {
            etl_model::nearest(wanted, self.templates.iter().map(|t| t.id.as_str()))
                .map(|s| vec![s.to_string()])
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for hit in self.search(&wanted.replace(['-', '_'], " "), 3) {
            if !suggestions.contains(&hit.id) {
                suggestions.push(hit.id);
            }
        }
        suggestions.truncate(3);
        let shown: String = wanted.chars().take(100).collect();
        Err(TemplateError::UnknownTemplate {
            id: shown,
            suggestions,
        })
    }

    /// The `limit` templates that best match `query` (name, description, source and
    /// destination systems, tags), best first. Any text is accepted: an empty query lists the
    /// gallery in id order, one without searchable words finds nothing, and only the first
    /// 4,096 characters and 32 distinct words of a longer one count.
    pub fn search(&self, query: &str, limit: usize) -> Vec<SearchHit> {
        search::search(&self.templates, &self.index, query, limit)
    }

    /// Creates the template's connections and flow for `tenant`.
    ///
    /// `name` names the flow (default: the template's flow name). `params` are the parameter
    /// values as text; each is checked against its declared type. Taken names get `_2`, `_3`;
    /// identical secret-free connections are reused; a required parameter that only fills a
    /// connection property the connector does not require (a token, a password) may be left
    /// out and is reported in [`ImportReport::missing`] with the command that sets it; any
    /// other missing required parameter refuses the import before anything is created.
    pub async fn import(
        &self,
        engine: &Engine,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> Result<ImportReport, TemplateError> {
        let t = self.get(id)?;
        import::import(t, engine, tenant, name, params).await
    }
}
