//! The knowledge base end to end on real index folders: incremental sync of bundled documents,
//! tenants' documents and their isolation, phrases, prefixes, snippets, citations, reopening after
//! a restart, and two instances (two processes) sharing one folder.

use std::time::{Duration, Instant};

use etl_kb::{DocumentFormat, KnowledgeBase};

const POSTGRES: &str = "# PostgreSQL\n\nReads and writes PostgreSQL.\n\n## Destination options\n\n\
    Options for writing.\n\n### merge\n\nUpserts rows on the key columns with ON CONFLICT.\n";
const HTTP: &str = "# HTTP\n\n## Pagination\n\nFollow the next link of each page until none is left.\n\n\
    ## Authentication\n\nBearer tokens and API keys.\n";

fn bundled<'a>(docs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
    docs.iter()
        .map(|(name, text)| (*name, text.as_bytes()))
        .collect()
}

#[test]
fn sync_indexes_only_what_changed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    let first = kb
        .sync_bundled(&bundled(&[
            ("docs/postgres.md", POSTGRES),
            ("docs/http.md", HTTP),
        ]))
        .unwrap();
    assert_eq!(
        (first.added, first.updated, first.removed, first.unchanged),
        (2, 0, 0, 0)
    );
    assert_eq!(first.passages_indexed, 5);

    let again = kb
        .sync_bundled(&bundled(&[
            ("docs/postgres.md", POSTGRES),
            ("docs/http.md", HTTP),
        ]))
        .unwrap();
    assert_eq!(
        (again.added, again.updated, again.removed, again.unchanged),
        (0, 0, 0, 2)
    );
    assert_eq!(again.passages_indexed, 0);

    let changed_http = HTTP.replace("Bearer tokens", "Bearer tokens and basic auth");
    let changed = kb
        .sync_bundled(&bundled(&[
            ("docs/http.md", &changed_http),
            ("docs/new.md", "# New\n\nFresh page."),
        ]))
        .unwrap();
    assert_eq!(
        (
            changed.added,
            changed.updated,
            changed.removed,
            changed.unchanged
        ),
        (1, 1, 1, 0)
    );
    assert!(
        kb.search("default", "upserts", 5).unwrap().is_empty(),
        "the removed page is gone"
    );
    let basic = kb.search("default", "basic auth", 5).unwrap();
    assert_eq!(basic[0].citation(), "docs/http.md#authentication");
    // The old version's passages were replaced, not duplicated.
    assert_eq!(kb.search("default", "pagination", 10).unwrap().len(), 1);
    let listed: Vec<String> = kb
        .list_bundled()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(listed, vec!["docs/http.md", "docs/new.md"]);

    kb.add_document(
        "acme",
        "notes.md",
        b"# Notes\n\nOur warehouse password rotates monthly.",
    )
    .unwrap();
    drop(kb);

    // A restart: the index, the manifest and the tenant's document are still there.
    let reopened = KnowledgeBase::open(dir.path()).unwrap();
    let resync = reopened
        .sync_bundled(&bundled(&[
            ("docs/http.md", &changed_http),
            ("docs/new.md", "# New\n\nFresh page."),
        ]))
        .unwrap();
    assert_eq!(resync.unchanged, 2);
    assert_eq!(resync.added + resync.updated + resync.removed, 0);
    assert_eq!(reopened.list_documents("acme").unwrap().len(), 1);
    let hits = reopened.search("acme", "password rotates", 3).unwrap();
    assert_eq!(hits[0].source, "notes.md");
    assert!(!hits[0].bundled);
}

#[test]
fn tenants_see_bundled_documents_and_only_their_own_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    kb.sync_bundled(&bundled(&[("docs/postgres.md", POSTGRES)]))
        .unwrap();
    let info = kb
        .add_document(
            "acme",
            "runbook.md",
            b"# Runbook\n\n## Failover\n\nPromote the zebrafish replica.",
        )
        .unwrap();
    assert_eq!(info.format, DocumentFormat::Markdown);
    assert_eq!(info.passages, 1);
    assert_eq!(info.tenant.as_deref(), Some("acme"));
    assert_eq!(info.title, "Runbook");

    let own = kb.search("acme", "zebrafish", 5).unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].citation(), "runbook.md#failover");
    assert_eq!(own[0].path, vec!["Runbook", "Failover"]);
    assert!(
        kb.search("globex", "zebrafish", 5).unwrap().is_empty(),
        "another tenant sees it"
    );
    assert!(kb.list_documents("globex").unwrap().is_empty());
    for tenant in ["acme", "globex"] {
        let hits = kb.search(tenant, "upserts", 5).unwrap();
        assert_eq!(
            hits[0].citation(),
            "docs/postgres.md#merge",
            "tenant {tenant}"
        );
        assert!(hits[0].bundled);
        assert_eq!(
            hits[0].path,
            vec!["PostgreSQL", "Destination options", "merge"]
        );
    }

    // Same name again replaces the document.
    kb.add_document(
        "acme",
        "runbook.md",
        b"# Runbook\n\n## Failover\n\nPromote the okapi replica.",
    )
    .unwrap();
    assert!(kb.search("acme", "zebrafish", 5).unwrap().is_empty());
    assert_eq!(kb.search("acme", "okapi", 5).unwrap().len(), 1);
    assert_eq!(kb.list_documents("acme").unwrap().len(), 1);

    // Another tenant's document of the same name is a different document.
    kb.add_document(
        "globex",
        "runbook.md",
        b"Globex failover: call the okapi keeper.",
    )
    .unwrap();
    assert!(!kb.remove_document("globex", "missing.md").unwrap());
    assert!(kb.remove_document("acme", "runbook.md").unwrap());
    assert!(!kb.remove_document("acme", "runbook.md").unwrap());
    assert!(kb.search("acme", "okapi", 5).unwrap().is_empty());
    let globex = kb.search("globex", "okapi", 5).unwrap();
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].title, "runbook");
    assert_eq!(globex[0].citation(), "runbook.md");
}

#[test]
fn phrases_prefixes_snippets_and_citations() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    kb.sync_bundled(&bundled(&[
        ("docs/postgres.md", POSTGRES),
        ("docs/http.md", HTTP),
    ]))
    .unwrap();

    let phrase = kb.search("default", "\"next link\"", 5).unwrap();
    assert_eq!(phrase.len(), 1);
    assert_eq!(phrase[0].citation(), "docs/http.md#pagination");
    assert!(
        phrase[0].snippet.contains("**next** **link**"),
        "{}",
        phrase[0].snippet
    );
    // Words in the wrong order are not the phrase.
    assert!(kb.search("default", "\"link next\"", 5).unwrap().is_empty());

    let prefix = kb.search("default", "paginat*", 5).unwrap();
    assert_eq!(prefix[0].citation(), "docs/http.md#pagination");
    let prefix = kb.search("default", "upsert*", 5).unwrap();
    assert_eq!(prefix[0].citation(), "docs/postgres.md#merge");
    assert!(
        prefix[0].snippet.contains("**Upserts**"),
        "{}",
        prefix[0].snippet
    );

    // Stemming: "upserting" finds "Upserts"; the synonym postgres ~ postgresql finds the page.
    assert_eq!(
        kb.search("default", "upserting", 5).unwrap()[0].citation(),
        "docs/postgres.md#merge"
    );
    let synonym = kb.search("default", "postgres", 5).unwrap();
    assert!(synonym.iter().all(|hit| hit.source == "docs/postgres.md"));
    assert!(!synonym.is_empty());

    // Headings count more than the body: "authentication" is a heading in http.md only.
    let hits = kb.search("default", "authentication", 5).unwrap();
    assert_eq!(hits[0].anchor, "authentication");
    assert_eq!(hits[0].text, "Bearer tokens and API keys.");
    assert!(hits[0].score > 0.0);
    // Text before the first section heading cites the title's anchor.
    let intro = kb.search("default", "reads writes", 5).unwrap();
    assert_eq!(intro[0].citation(), "docs/postgres.md#postgresql");
}

#[test]
fn a_second_instance_on_the_same_folder_sees_commits_and_writes_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let server = KnowledgeBase::open(dir.path()).unwrap();
    let cli = KnowledgeBase::open(dir.path()).unwrap();
    // Both write at once: tantivy's lock file makes one wait for the other.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..5 {
                server
                    .add_document("acme", &format!("server-{i}.md"), b"# S\n\nfrom the server")
                    .unwrap();
            }
        });
        scope.spawn(|| {
            for i in 0..5 {
                cli.add_document(
                    "acme",
                    &format!("cli-{i}.md"),
                    b"# C\n\nfrom the command line",
                )
                .unwrap();
            }
        });
    });
    assert_eq!(server.list_documents("acme").unwrap().len(), 10);
    assert_eq!(cli.list_documents("acme").unwrap().len(), 10);
    // The server's reader picks up the other instance's commits by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = server.search("acme", "command line", 20).unwrap();
        if hits.len() == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server saw {} of 5 documents",
            hits.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
