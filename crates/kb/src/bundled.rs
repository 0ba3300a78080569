//! The product documentation under `docs/`, embedded at compile time so a fresh binary can build
//! its knowledge base without the source tree (`build.rs` rebuilds the crate when a page changes).

use include_dir::{Dir, include_dir};

static DOCS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../docs");

/// Pages for developers, not users: kept out of the knowledge base.
const EXCLUDED: &[&str] = &["style.md"];

/// Every Markdown page under `docs/` (except the developers' style guide), as
/// (`docs/<relative path>`, content), sorted by path: the input of
/// [`crate::KnowledgeBase::sync_bundled`].
pub fn bundled_docs() -> Vec<(&'static str, &'static [u8])> {
    let mut docs = Vec::new();
    collect(&DOCS, &mut docs);
    docs.sort_by_key(|(path, _)| *path);
    docs
}

fn collect(dir: &'static Dir<'static>, out: &mut Vec<(&'static str, &'static [u8])>) {
    for file in dir.files() {
        let path = file.path().to_str().unwrap_or_default();
        let is_markdown = path.ends_with(".md");
        if is_markdown && !EXCLUDED.contains(&path) {
            out.push((source_name(path), file.contents()));
        }
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

/// `connectors/postgres.md` → `docs/connectors/postgres.md`, leaked once per page so callers get
/// `&'static str` like the contents; the set is small and fixed at compile time.
fn source_name(relative: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut names = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names
        .entry(relative)
        .or_insert_with(|| Box::leak(format!("docs/{relative}").into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_the_user_docs_only() {
        let docs = bundled_docs();
        let names: Vec<&str> = docs.iter().map(|(name, _)| *name).collect();
        assert!(names.contains(&"docs/connectors/postgres.md"), "{names:?}");
        assert!(names.contains(&"docs/getting-started.md"), "{names:?}");
        assert!(!names.contains(&"docs/style.md"), "{names:?}");
        assert!(names.iter().all(|name| name.ends_with(".md")));
        // Called twice, the same leaked names are reused.
        assert_eq!(bundled_docs()[0].0.as_ptr(), docs[0].0.as_ptr());
    }
}
