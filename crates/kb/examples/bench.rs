//! Knowledge-base benchmark: indexes a generated corpus of 100,000 passages, prints the build
//! rate, then the p50/p99 latency of 10,000 searches (words, phrases and prefixes, 10 hits each
//! with snippets). Run with `cargo run --release -p etl-kb --example bench [PASSAGES] [QUERIES]`.

use std::time::{Duration, Instant};

use etl_kb::KnowledgeBase;

const SECTIONS_PER_DOCUMENT: usize = 50;
const WORDS_PER_SECTION: usize = 90;
const VOCABULARY: usize = 20_000;

/// xorshift64*: deterministic, so every run indexes and queries the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Skewed towards the start of the vocabulary, as word use is in real text.
    fn word<'a>(&mut self, vocabulary: &'a [String]) -> &'a str {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        &vocabulary[((u * u * u) * vocabulary.len() as f64) as usize]
    }
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ren", "tas", "vel", "dor", "pi", "qua", "sen", "tor", "ul", "ver",
        "zan", "bri", "cho", "del", "fin", "gar", "hul", "jo", "mar", "nex", "op",
    ];
    (0..VOCABULARY)
        .map(|i| {
            let syllables = 2 + rng.below(3);
            let mut word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            // Keeps every word distinct.
            word.push_str(&format!("{}", i % 97));
            word
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let passages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let queries: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocabulary = vocabulary(&mut rng);

    let documents = passages.div_ceil(SECTIONS_PER_DOCUMENT);
    let mut corpus: Vec<(String, Vec<u8>)> = Vec::with_capacity(documents);
    for d in 0..documents {
        let mut text = format!(
            "# {} {} guide {d}\n\n",
            rng.word(&vocabulary),
            rng.word(&vocabulary)
        );
        for s in 0..SECTIONS_PER_DOCUMENT.min(passages - d * SECTIONS_PER_DOCUMENT) {
            text.push_str(&format!(
                "## {} {} {s}\n\n",
                rng.word(&vocabulary),
                rng.word(&vocabulary)
            ));
            for w in 0..WORDS_PER_SECTION {
                text.push_str(rng.word(&vocabulary));
                text.push(if w % 15 == 14 { '.' } else { ' ' });
            }
            text.push_str("\n\n");
        }
        corpus.push((format!("bench/doc-{d:05}.md"), text.into_bytes()));
    }
    let docs: Vec<(&str, &[u8])> = corpus
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    let corpus_bytes: usize = docs.iter().map(|(_, b)| b.len()).sum();

    let dir = tempfile::tempdir().expect("a temporary folder for the index");
    let kb = KnowledgeBase::open(dir.path()).expect("open the knowledge base");
    let started = Instant::now();
    let report = kb.sync_bundled(&docs).expect("index the corpus");
    let build = started.elapsed();
    println!(
        "build: {} passages from {} documents ({:.1} MB) in {:.2} s = {:.0} passages/s",
        report.passages_indexed,
        documents,
        corpus_bytes as f64 / 1e6,
        build.as_secs_f64(),
        report.passages_indexed as f64 / build.as_secs_f64()
    );

    let started = Instant::now();
    let reopened = KnowledgeBase::open(dir.path()).expect("reopen");
    let again = reopened.sync_bundled(&docs).expect("sync again");
    println!(
        "reopen + sync of an up-to-date index: {:.1} ms ({} unchanged)",
        started.elapsed().as_secs_f64() * 1e3,
        again.unchanged
    );

    let mut latencies: Vec<Duration> = Vec::with_capacity(queries);
    // Per kind of query: phrases, prefixes, plain words.
    let mut by_kind: [Vec<Duration>; 3] = Default::default();
    let mut total_hits = 0usize;
    for q in 0..queries {
        let query = match q % 5 {
            0 => format!("\"{} {}\"", rng.word(&vocabulary), rng.word(&vocabulary)),
            1 => {
                let word = rng.word(&vocabulary);
                format!("{}*", &word[..4.min(word.len())])
            }
            _ => (0..2 + rng.below(3))
                .map(|_| rng.word(&vocabulary))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let started = Instant::now();
        let hits = kb.search("bench", &query, 10).expect("search");
        let elapsed = started.elapsed();
        latencies.push(elapsed);
        by_kind[(q % 5).min(2)].push(elapsed);
        total_hits += hits.len();
    }
    latencies.sort();
    let percentile_of = |sorted: &[Duration], p: f64| {
        let index = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
        sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e3
    };
    let percentile = |p: f64| percentile_of(&latencies, p);
    let mean = latencies.iter().sum::<Duration>().as_secs_f64() * 1e3 / latencies.len() as f64;
    println!(
        "search: {} queries (10 hits with snippets each, {:.1} hits on average): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms",
        latencies.len(),
        total_hits as f64 / latencies.len() as f64,
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
        mean
    );
    for (name, mut kind) in ["phrase", "prefix", "words"].into_iter().zip(by_kind) {
        if kind.is_empty() {
            continue;
        }
        kind.sort();
        println!(
            "  {name:>6} queries: p50 {:.3} ms, p99 {:.3} ms",
            percentile_of(&kind, 0.50),
            percentile_of(&kind, 0.99)
        );
    }
}
