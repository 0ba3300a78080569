//! The tantivy schema and analyzers of the knowledge-base index: one tantivy document per
//! passage, English stemming on the searched fields, an unstemmed word field for prefixes.

use tantivy::Index;
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};

/// Stemmed English: `paginates`, `pagination` and `paginated` all meet at one term.
pub(crate) const ENGLISH: &str = "kb_english";
/// Lower-cased words without stemming, so `paginat*` can be expanded against real words.
pub(crate) const WORDS: &str = "kb_words";

/// The fields of a passage document.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// Which document the passage belongs to (bundled source or tenant + name), for deletes.
    pub doc_key: Field,
    /// `bundled` or `tenant:<id>`: who may see the passage.
    pub scope: Field,
    /// The document title.
    pub title: Field,
    /// The passage's own heading (the last element of the path).
    pub heading: Field,
    /// The headings below the title, one value each, outermost first.
    pub path: Field,
    /// The passage text.
    pub body: Field,
    /// The source to cite (`docs/connectors/postgres.md` or the uploaded name), stored only.
    pub source: Field,
    /// The heading's anchor, stored only.
    pub anchor: Field,
    /// Unstemmed words of title, path and body: the vocabulary prefix queries expand against.
    pub words: Field,
}

pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let english = |stored: bool| {
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ENGLISH)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored {
            options.set_stored()
        } else {
            options
        }
    };
    let doc_key = builder.add_text_field("doc_key", STRING | STORED);
    let scope = builder.add_text_field("scope", STRING);
    let title = builder.add_text_field("title", english(true));
    let heading = builder.add_text_field("heading", english(false));
    let path = builder.add_text_field("path", english(true));
    let body = builder.add_text_field("body", english(true));
    let source = builder.add_text_field("source", STORED);
    let anchor = builder.add_text_field("anchor", STORED);
    let words = builder.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS)
                .set_index_option(IndexRecordOption::Basic),
        ),
    );
    let fields = Fields {
        doc_key,
        scope,
        title,
        heading,
        path,
        body,
        source,
        anchor,
        words,
    };
    (builder.build(), fields)
}

pub(crate) fn english_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

pub(crate) fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .build()
}

/// Analyzers are not stored in the index, so every open registers them again.
pub(crate) fn register_analyzers(index: &Index) {
    index.tokenizers().register(ENGLISH, english_analyzer());
    index.tokenizers().register(WORDS, words_analyzer());
}
