//! Search quality on the real documentation: the questions in `questions.json` (worded as users
//! type them) must find a passage that answers them in the top 3 for at least 85% of questions.
//! Prints recall@3 and MRR (over the top 10) and every question's rank.

use etl_kb::{KnowledgeBase, bundled_docs};
use serde::Deserialize;

#[derive(Deserialize)]
struct QuestionSet {
    questions: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    question: String,
    /// `source#anchor` of every passage that answers the question.
    answers: Vec<String>,
}

const REQUIRED_RECALL_AT_3: f64 = 0.85;

#[test]
fn questions_find_their_answers_in_the_top_three() {
    let set: QuestionSet =
        serde_json::from_str(include_str!("questions.json")).expect("questions.json parses");
    assert!(
        set.questions.len() >= 40,
        "the question set has {} questions",
        set.questions.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::open(dir.path()).unwrap();
    let report = kb.sync_bundled(&bundled_docs()).unwrap();
    assert!(report.added > 10, "{report:?}");

    let mut in_top_3 = 0usize;
    let mut reciprocal_ranks = 0.0f64;
    for question in &set.questions {
        let hits = kb.search("default", &question.question, 10).unwrap();
        let citations: Vec<String> = hits.iter().map(|hit| hit.citation()).collect();
        let rank = citations
            .iter()
            .position(|citation| question.answers.contains(citation))
            .map(|index| index + 1);
        if rank.is_some_and(|rank| rank <= 3) {
            in_top_3 += 1;
        }
        reciprocal_ranks += rank.map_or(0.0, |rank| 1.0 / rank as f64);
        let shown = match rank {
            Some(rank) => format!("rank {rank}"),
            None => "MISS  ".to_string(),
        };
        println!(
            "{shown:>8}  {:<60} top: {:?}",
            question.question,
            &citations[..citations.len().min(3)]
        );
    }
    let total = set.questions.len() as f64;
    let recall = in_top_3 as f64 / total;
    let mrr = reciprocal_ranks / total;
    println!(
        "recall@3 = {recall:.3} ({in_top_3}/{}), MRR@10 = {mrr:.3}",
        set.questions.len()
    );
    assert!(
        recall >= REQUIRED_RECALL_AT_3,
        "recall@3 is {recall:.3}, below {REQUIRED_RECALL_AT_3}; see the ranks printed above (run with --nocapture)"
    );
}
