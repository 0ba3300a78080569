//! Bad input never panics: odd queries give results or nothing, unreadable files give errors that
//! name the file and leave the index unchanged, huge documents stay bounded, and searches keep
//! working while documents are added.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etl_kb::{
    KbError, KbErrorKind, KnowledgeBase, MAX_DOCUMENT_BYTES, MAX_PASSAGE_CHARS, OVERLAP_CHARS,
};

fn kb_with_docs() -> (tempfile::TempDir, KnowledgeBase) {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    kb.sync_bundled(&etl_kb::bundled_docs()).unwrap();
    (dir, kb)
}

#[test]
fn odd_queries_answer_results_or_nothing() {
    let (_dir, kb) = kb_with_docs();
    assert!(kb.search("default", "", 10).unwrap().is_empty());
    assert!(kb.search("default", "   \n\t ", 10).unwrap().is_empty());
    assert!(
        kb.search("default", "!!! ??? ::: ((( ))) *** \"\" ''", 10)
            .unwrap()
            .is_empty()
    );
    assert!(kb.search("default", "*", 10).unwrap().is_empty());
    assert!(kb.search("default", "merge", 0).unwrap().is_empty());
    // tantivy query syntax is ordinary text here.
    for query in [
        "title:(",
        "body:merge AND (",
        "NOT OR AND",
        "merge^2~3",
        "[a TO",
        "\"unterminated phrase",
        "-merge +keys",
        "a*",
        "\u{0}\u{1}\u{7f}",
        "日本語 の 検索",
    ] {
        kb.search("default", query, 10)
            .unwrap_or_else(|err| panic!("query {query:?} failed: {err}"));
    }
    assert!(!kb.search("default", "title:(merge", 5).unwrap().is_empty());

    // A 1 MB query (a pasted log) is read by its start and answers quickly.
    let huge = "merge keys unique index ".repeat(44_000);
    assert!(huge.len() > 1_000_000);
    let started = Instant::now();
    let hits = kb.search("default", &huge, 5).unwrap();
    assert!(!hits.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Limits are capped.
    assert!(kb.search("default", "flow", 10_000).unwrap().len() <= etl_kb::MAX_SEARCH_LIMIT);

    let err = kb.search("", "merge", 5).unwrap_err();
    assert_eq!(err.kind(), KbErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "invalid tenant '': it is empty");
}

#[test]
fn binary_and_unsupported_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
    let err = kb.add_document("acme", "diagram.png", &png).unwrap_err();
    assert_eq!(err.kind(), KbErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "'diagram.png' is not a text document: it contains binary data (a NUL byte at offset 8); \
         add Markdown, plain text or HTML saved as UTF-8"
    );
    let err = kb
        .add_document("acme", "manual.pdf", b"%PDF-1.4\n...")
        .unwrap_err();
    assert!(
        matches!(err, KbError::Unsupported { format: "PDF", .. }),
        "{err}"
    );
    let err = kb
        .add_document("acme", "notes.docx", b"PK\x03\x04")
        .unwrap_err();
    assert!(err.to_string().contains("export it as Markdown"), "{err}");
    let err = kb
        .add_document("acme", "latin1.txt", b"caf\xe9 au lait")
        .unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    let err = kb
        .add_document("acme", "blank.md", b"\n\n   \n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "'blank.md' has no text to index (it is empty or only markup); add a document with content"
    );
    let err = kb.add_document("acme", "", b"text").unwrap_err();
    assert_eq!(err.kind(), KbErrorKind::InvalidInput);
    assert!(
        kb.list_documents("acme").unwrap().is_empty(),
        "nothing was added"
    );
}

#[test]
fn html_documents_are_indexed_by_their_headings_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    let page = br#"<!DOCTYPE html><html><head><title>Ops handbook</title>
        <style>.x { color: red }</style><script>var secretToken = "abc";</script></head>
        <body><h1>Ops handbook</h1><p>Welcome &amp; hello.</p>
        <h2>Nightly loads</h2><p>The nightly load starts at 02:00 &mdash; watch the <code>orders</code> flow.</p>
        <h3>When it fails</h3><p>Re-run it with <b>run flow orders</b>.</p></body></html>"#;
    let info = kb.add_document("acme", "handbook.html", page).unwrap();
    assert_eq!(info.format, etl_kb::DocumentFormat::Html);
    assert_eq!(info.title, "Ops handbook");
    let hits = kb.search("acme", "nightly load", 5).unwrap();
    assert_eq!(hits[0].citation(), "handbook.html#nightly-loads");
    assert!(
        hits[0].text.contains("02:00 — watch the `orders` flow."),
        "{}",
        hits[0].text
    );
    let fails = kb.search("acme", "when it fails re-run", 5).unwrap();
    assert_eq!(
        fails[0].path,
        vec!["Ops handbook", "Nightly loads", "When it fails"]
    );
    assert!(
        kb.search("acme", "secretToken", 5).unwrap().is_empty(),
        "script text was indexed"
    );
    assert!(
        kb.search("acme", "color red", 5).unwrap().is_empty(),
        "style text was indexed"
    );
}

#[test]
fn huge_documents_are_split_into_bounded_passages_and_oversized_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    let mut text = String::from("# Big manual\n\n");
    let mut section = 0;
    while text.len() < 8 * 1024 * 1024 {
        text.push_str(&format!("## Section {section}\n\n"));
        for paragraph in 0..6 {
            text.push_str(&format!(
                "Paragraph {paragraph} of section {section} talks about loading orders into the warehouse \
                 with merge on the id column, retries, schedules and the high-water mark. "
            ));
            text.push_str(&"More words to make the paragraph long enough. ".repeat(4));
            text.push_str("\n\n");
        }
        section += 1;
    }
    text.push_str("## The end\n\nThe quetzal closes the manual.\n");
    let started = Instant::now();
    let info = kb.add_document("acme", "big.md", text.as_bytes()).unwrap();
    assert!(
        info.passages as usize > section,
        "{} passages for {section} sections",
        info.passages
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    let hits = kb.search("acme", "quetzal", 3).unwrap();
    assert_eq!(hits[0].citation(), "big.md#the-end");
    for hit in kb.search("acme", "orders warehouse merge", 50).unwrap() {
        assert!(
            hit.text.len() <= MAX_PASSAGE_CHARS + OVERLAP_CHARS + 8,
            "{}",
            hit.text.len()
        );
    }

    let oversized = vec![b'a'; MAX_DOCUMENT_BYTES + 1];
    let err = kb.add_document("acme", "huge.txt", &oversized).unwrap_err();
    assert_eq!(err.kind(), KbErrorKind::TooLarge);
    assert!(
        err.to_string()
            .starts_with("'huge.txt' is 16777217 bytes, over the knowledge base's limit"),
        "{err}"
    );
}

#[test]
fn searches_keep_working_while_documents_are_added() {
    let (_dir, kb) = kb_with_docs();
    let kb = Arc::new(kb);
    let done = Arc::new(AtomicBool::new(false));
    let searchers: Vec<_> = (0..3)
        .map(|i| {
            let kb = Arc::clone(&kb);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut searches = 0;
                while !done.load(Ordering::Relaxed) || searches < 20 {
                    let query =
                        ["merge keys", "pagination", "\"next page\"", "schedul*"][searches % 4];
                    let hits = kb
                        .search("acme", query, 5)
                        .unwrap_or_else(|err| panic!("thread {i}: {err}"));
                    assert!(!hits.is_empty(), "thread {i}: no hits for {query}");
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    for n in 0..15 {
        kb.add_document(
            "acme",
            &format!("doc-{n}.md"),
            format!("# Doc {n}\n\n## Part\n\nThe capybara number {n}.").as_bytes(),
        )
        .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for searcher in searchers {
        assert!(searcher.join().expect("a search thread panicked") >= 20);
    }
    assert_eq!(kb.search("acme", "capybara", 50).unwrap().len(), 15);
    assert_eq!(kb.list_documents("acme").unwrap().len(), 15);
}
