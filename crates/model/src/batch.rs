//! A batch of rows with one column list: the unit every source yields and every sink writes.

use std::collections::HashMap;

use crate::Value;

/// Rows aligned to `columns`; a row shorter than `columns` is padded with nulls by
/// [`Batch::normalize`]. Sources with a varying shape (JSON) build batches through
/// [`RecordBuilder`], so the column list is the union of the keys seen in the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Batch {
    pub fn new(columns: Vec<String>) -> Batch {
        Batch {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Pads short rows with nulls so every row has one value per column.
    pub fn normalize(&mut self) {
        let n = self.columns.len();
        for row in &mut self.rows {
            row.resize(n, Value::Null);
        }
    }

    /// Rows as JSON objects, for previews and query results.
    pub fn to_json_rows(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut map = serde_json::Map::with_capacity(self.columns.len());
                for (c, v) in self.columns.iter().zip(row) {
                    map.insert(c.clone(), v.to_json());
                }
                serde_json::Value::Object(map)
            })
            .collect()
    }
}

/// Builds a batch from records whose keys may differ from record to record.
#[derive(Default)]
pub struct RecordBuilder {
    index: HashMap<String, usize>,
    batch: Batch,
}

impl RecordBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.batch.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.rows.is_empty()
    }

    /// Adds one record given as (column, value) pairs.
    pub fn push(&mut self, fields: impl IntoIterator<Item = (String, Value)>) {
        let mut row = vec![Value::Null; self.batch.columns.len()];
        for (name, value) in fields {
            let idx = match self.index.get(&name) {
                Some(&i) => i,
                None => {
                    let i = self.batch.columns.len();
                    self.index.insert(name.clone(), i);
                    self.batch.columns.push(name);
                    i
                }
            };
            if idx >= row.len() {
                row.resize(idx + 1, Value::Null);
            }
            row[idx] = value;
        }
        self.batch.rows.push(row);
    }

    /// The finished batch (rows padded to the full column list); the builder starts afresh.
    pub fn take(&mut self) -> Batch {
        self.index.clear();
        let mut batch = std::mem::take(&mut self.batch);
        batch.normalize();
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_of_keys_with_nulls() {
        let mut b = RecordBuilder::new();
        b.push([("a".to_string(), Value::Int(1))]);
        b.push([
            ("b".to_string(), Value::Int(2)),
            ("a".to_string(), Value::Int(3)),
        ]);
        let batch = b.take();
        assert_eq!(batch.columns, vec!["a", "b"]);
        assert_eq!(
            batch.rows,
            vec![
                vec![Value::Int(1), Value::Null],
                vec![Value::Int(3), Value::Int(2)]
            ]
        );
        assert!(b.is_empty());
    }
}
