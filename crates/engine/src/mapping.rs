//! Applies a flow's [`Mapping`] to batches: filter, rename, exclude, constant, cast.

use std::collections::HashMap;

use etl_model::{Batch, ColumnType, Value};

use crate::entity::Mapping;
use crate::expr::Expr;

/// A mapping checked once and applied to every batch.
pub struct CompiledMapping {
    filter: Option<Expr>,
    rename: HashMap<String, String>,
    exclude: Vec<String>,
    constants: Vec<(String, Value)>,
    casts: Vec<(String, ColumnType)>,
    identity: bool,
}

impl CompiledMapping {
    pub fn compile(mapping: &Mapping) -> Result<CompiledMapping, String> {
        let filter = mapping
            .filter
            .as_deref()
            .map(|f| Expr::parse(f).map_err(|e| format!("filter '{f}': {e}")))
            .transpose()?;
        Ok(CompiledMapping {
            filter,
            rename: mapping.rename.iter().cloned().collect(),
            exclude: mapping.exclude.clone(),
            constants: mapping
                .constants
                .iter()
                .map(|(c, v)| (c.clone(), Value::Text(v.clone())))
                .collect(),
            casts: mapping.casts.clone(),
            identity: mapping.is_empty(),
        })
    }

    /// The mapped batch; an error names the column, the value and the row.
    pub fn apply(&self, mut batch: Batch) -> Result<Batch, String> {
        if self.identity {
            return Ok(batch);
        }
        if let Some(filter) = &self.filter {
            let index: HashMap<&str, usize> = batch
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect();
            let rows = std::mem::take(&mut batch.rows);
            batch.rows = rows
                .into_iter()
                .filter(|row| {
                    filter.matches(&|name: &str| {
                        index
                            .get(name)
                            .and_then(|&i| row.get(i).cloned())
                            .unwrap_or(Value::Null)
                    })
                })
                .collect();
        }
        for col in &mut batch.columns {
            if let Some(to) = self.rename.get(col) {
                *col = to.clone();
            }
        }
        if !self.exclude.is_empty() {
            let keep: Vec<bool> = batch
                .columns
                .iter()
                .map(|c| !self.exclude.contains(c))
                .collect();
            batch.columns = batch
                .columns
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.clone())
                .collect();
            for row in &mut batch.rows {
                let mut i = 0;
                row.retain(|_| {
                    let k = keep.get(i).copied().unwrap_or(true);
                    i += 1;
                    k
                });
            }
        }
        for (col, value) in &self.constants {
            match batch.column_index(col) {
                Some(i) => batch.rows.iter_mut().for_each(|r| r[i] = value.clone()),
                None => {
                    batch.columns.push(col.clone());
                    batch.rows.iter_mut().for_each(|r| r.push(value.clone()));
                }
            }
        }
        for (col, to) in &self.casts {
            if let Some(i) = batch.column_index(col) {
                for (n, row) in batch.rows.iter_mut().enumerate() {
                    row[i] = row[i]
                        .cast(*to)
                        .map_err(|e| format!("column '{col}', row {} of the batch: {e}", n + 1))?;
                }
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_every_step() {
        let m = Mapping {
            filter: Some("status = 'active'".into()),
            rename: vec![("amt".into(), "amount".into())],
            exclude: vec!["secret".into()],
            constants: vec![("source".into(), "crm".into())],
            casts: vec![("amount".into(), ColumnType::Float)],
        };
        let c = CompiledMapping::compile(&m).unwrap();
        let batch = Batch {
            columns: vec!["status".into(), "amt".into(), "secret".into()],
            rows: vec![
                vec!["active".into(), "12".into(), "x".into()],
                vec!["closed".into(), "5".into(), "y".into()],
            ],
        };
        let out = c.apply(batch).unwrap();
        assert_eq!(out.columns, vec!["status", "amount", "source"]);
        assert_eq!(
            out.rows,
            vec![vec![
                Value::from("active"),
                Value::Float(12.0),
                Value::from("crm")
            ]]
        );
    }

    #[test]
    fn cast_failure_names_column_and_row() {
        let m = Mapping {
            casts: vec![("n".into(), ColumnType::Integer)],
            ..Default::default()
        };
        let c = CompiledMapping::compile(&m).unwrap();
        let batch = Batch {
            columns: vec!["n".into()],
            rows: vec![vec!["1".into()], vec!["x".into()]],
        };
        assert_eq!(
            c.apply(batch).unwrap_err(),
            "column 'n', row 2 of the batch: cannot cast 'x' to integer"
        );
    }
}
