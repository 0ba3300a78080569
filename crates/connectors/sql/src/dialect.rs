//! SQL text generation that differs between SQLite, PostgreSQL and MySQL: identifier quoting,
//! placeholders, column types, upsert clauses and table-name parsing. Everything here is pure
//! string building, so the read and write paths stay one shared implementation.

use etl_model::{ColumnType, ConnectorError};

/// The three SQL dialects this crate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    /// The product name used in messages.
    pub fn title(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL",
        }
    }

    /// Quotes an identifier, doubling any embedded quote character, so any name (spaces,
    /// quotes, reserved words) is safe to splice into SQL text.
    pub fn quote(self, ident: &str) -> String {
        let q = match self {
            Dialect::Mysql => '`',
            _ => '"',
        };
        let mut out = String::with_capacity(ident.len() + 2);
        out.push(q);
        for c in ident.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        out
    }

    /// The placeholder for the `n`-th (1-based) bound parameter.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }

    /// The most parameters one statement may bind.
    pub fn max_params(self) -> usize {
        match self {
            Dialect::Sqlite => 32_766,
            Dialect::Postgres | Dialect::Mysql => 65_535,
        }
    }

    /// The longest identifier the database keeps without truncating.
    pub fn max_ident_len(self) -> usize {
        match self {
            Dialect::Postgres => 63,
            Dialect::Mysql => 64,
            Dialect::Sqlite => 1024,
        }
    }

    /// Whether two column names denote the same column. MySQL and SQLite compare column names
    /// case-insensitively; PostgreSQL quoted identifiers are exact.
    pub fn same_name(self, a: &str, b: &str) -> bool {
        match self {
            Dialect::Postgres => a == b,
            _ => a.eq_ignore_ascii_case(b),
        }
    }

    /// The column type a created table gets for an inferred type. Key columns of text type
    /// need a bounded type in MySQL, which cannot index an unbounded TEXT column.
    pub fn column_type(self, t: ColumnType, is_key: bool) -> &'static str {
        match (self, t) {
            (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
            (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
            (Dialect::Postgres, ColumnType::Float) => "DOUBLE PRECISION",
            (Dialect::Postgres, ColumnType::Date) => "DATE",
            (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMP",
            (Dialect::Postgres, ColumnType::Json) => "JSONB",
            (Dialect::Postgres, ColumnType::Text) => "TEXT",
            (Dialect::Mysql, ColumnType::Boolean) => "BOOLEAN",
            (Dialect::Mysql, ColumnType::Integer) => "BIGINT",
            (Dialect::Mysql, ColumnType::Float) => "DOUBLE",
            (Dialect::Mysql, ColumnType::Date) => "DATE",
            (Dialect::Mysql, ColumnType::Timestamp) => "DATETIME(6)",
            (Dialect::Mysql, ColumnType::Json) if is_key => "VARCHAR(255)",
            (Dialect::Mysql, ColumnType::Json) => "JSON",
            (Dialect::Mysql, ColumnType::Text) if is_key => "VARCHAR(255)",
            (Dialect::Mysql, ColumnType::Text) => "LONGTEXT",
            (Dialect::Sqlite, ColumnType::Boolean) => "BOOLEAN",
            // BIGINT, not INTEGER: an INTEGER PRIMARY KEY would become the rowid, which turns a
            // null key into a fresh number instead of an error.
            (Dialect::Sqlite, ColumnType::Integer) => "BIGINT",
            (Dialect::Sqlite, ColumnType::Float) => "REAL",
            (Dialect::Sqlite, ColumnType::Date) => "DATE",
            (Dialect::Sqlite, ColumnType::Timestamp) => "TIMESTAMP",
            (Dialect::Sqlite, ColumnType::Json) => "TEXT",
            (Dialect::Sqlite, ColumnType::Text) => "TEXT",
        }
    }

    /// The upsert tail of an `INSERT` whose target columns are `columns`, keyed on `keys`.
    pub fn upsert_clause(self, columns: &[String], keys: &[String]) -> String {
        let non_keys: Vec<&String> = columns
            .iter()
            .filter(|c| !keys.iter().any(|k| self.same_name(k, c)))
            .collect();
        match self {
            Dialect::Mysql => {
                // MariaDB has no row alias syntax, and VALUES() still works on MySQL 8.
                let sets: Vec<String> = if non_keys.is_empty() {
                    let k = self.quote(&keys[0]);
                    vec![format!("{k} = {k}")]
                } else {
                    non_keys
                        .iter()
                        .map(|c| {
                            let q = self.quote(c);
                            format!("{q} = VALUES({q})")
                        })
                        .collect()
                };
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            Dialect::Postgres | Dialect::Sqlite => {
                let target = self.column_list(keys);
                if non_keys.is_empty() {
                    format!(" ON CONFLICT ({target}) DO NOTHING")
                } else {
                    let sets: Vec<String> = non_keys
                        .iter()
                        .map(|c| {
                            let q = self.quote(c);
                            format!("{q} = excluded.{q}")
                        })
                        .collect();
                    format!(" ON CONFLICT ({target}) DO UPDATE SET {}", sets.join(", "))
                }
            }
        }
    }

    /// `"a", "b", "c"`.
    pub fn column_list(self, columns: &[String]) -> String {
        columns
            .iter()
            .map(|c| self.quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `INSERT INTO t (cols) VALUES (?, ?), (?, ?)` for `rows` rows.
    pub fn insert_sql(self, table: &str, columns: &[String], rows: usize) -> String {
        let cols = self.column_list(columns);
        let mut sql = String::with_capacity(32 + cols.len() + rows * columns.len() * 4);
        sql.push_str("INSERT INTO ");
        sql.push_str(table);
        sql.push_str(" (");
        sql.push_str(&cols);
        sql.push_str(") VALUES ");
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&self.placeholder(n));
            }
            sql.push(')');
        }
        sql
    }
}

/// A table named by a flow: `table`, `schema.table`, or either part in double quotes when it
/// contains a dot (`"my.schema"."odd name"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    pub fn parse(object: &str) -> Result<TableRef, ConnectorError> {
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = object.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        parts.push(cur);
        let bad = || {
            ConnectorError::config(format!(
                "'{object}' is not a table name; write table, schema.table, or quote a name that contains a dot: \"my.table\""
            ))
        };
        if quoted || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.len() {
            1 => Ok(TableRef {
                schema: None,
                name: parts.remove(0),
            }),
            2 => {
                let name = parts.pop().unwrap_or_default();
                Ok(TableRef {
                    schema: parts.pop(),
                    name,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The schema-qualified, quoted name.
    pub fn sql(&self, d: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", d.quote(s), d.quote(&self.name)),
            None => d.quote(&self.name),
        }
    }

    /// A sibling table in the same schema.
    pub fn sibling(&self, name: String) -> TableRef {
        TableRef {
            schema: self.schema.clone(),
            name,
        }
    }

    /// `<table>__<tag>_<run id>`, shortened from the table-name end so the run id survives
    /// the database's identifier limit and concurrent runs never share a name.
    pub fn scratch_name(&self, d: Dialect, tag: &str, run_id: &str) -> String {
        let run: String = run_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let suffix = format!("__{tag}_{run}");
        let room = d.max_ident_len().saturating_sub(suffix.len());
        let mut base = String::new();
        for c in self.name.chars() {
            if base.len() + c.len_utf8() > room {
                break;
            }
            base.push(c);
        }
        let mut name = base + &suffix;
        while name.len() > d.max_ident_len() {
            name.pop();
        }
        name
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Maps a declared database column type back onto the engine's types, so values can be coerced
/// before binding. `None` means "leave the value alone" (text and anything exotic).
pub fn classify_declared(decl: &str) -> Option<ColumnType> {
    let t = decl.trim().to_ascii_lowercase();
    if t.contains("bool") || t.starts_with("tinyint(1)") || t == "bit(1)" {
        return Some(ColumnType::Boolean);
    }
    if t.starts_with("timestamp") || t.starts_with("datetime") {
        return Some(ColumnType::Timestamp);
    }
    if t == "date" {
        return Some(ColumnType::Date);
    }
    if t.starts_with("json") {
        return Some(ColumnType::Json);
    }
    if t.contains("char") || t.contains("text") || t.contains("clob") || t.ends_with("[]") {
        return None;
    }
    if t.contains("int") && !t.contains("interval") && !t.contains("point") {
        return Some(ColumnType::Integer);
    }
    if ["double", "float", "real", "numeric", "decimal"]
        .iter()
        .any(|k| t.contains(k))
    {
        return Some(ColumnType::Float);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_doubles_embedded_quotes() {
        assert_eq!(Dialect::Postgres.quote("a \"b\""), "\"a \"\"b\"\"\"");
        assert_eq!(Dialect::Mysql.quote("or`der"), "`or``der`");
        assert_eq!(Dialect::Sqlite.quote("select"), "\"select\"");
    }

    #[test]
    fn parses_table_refs() {
        assert_eq!(
            TableRef::parse("s.t").unwrap(),
            TableRef {
                schema: Some("s".into()),
                name: "t".into()
            }
        );
        assert_eq!(TableRef::parse("\"a.b\"").unwrap().name, "a.b");
        assert_eq!(TableRef::parse("\"x\"\"y\"").unwrap().name, "x\"y");
        assert!(TableRef::parse("a.b.c").is_err());
        assert!(TableRef::parse("a.").is_err());
        assert!(TableRef::parse("\"open").is_err());
    }

    #[test]
    fn builds_inserts_and_upserts() {
        let cols = vec!["id".to_string(), "name".to_string()];
        assert_eq!(
            Dialect::Postgres.insert_sql("\"t\"", &cols, 2),
            "INSERT INTO \"t\" (\"id\", \"name\") VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            Dialect::Mysql.upsert_clause(&cols, &["id".into()]),
            " ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
        );
        assert_eq!(
            Dialect::Sqlite.upsert_clause(&cols, &["ID".into()]),
            " ON CONFLICT (\"ID\") DO UPDATE SET \"name\" = excluded.\"name\""
        );
        assert_eq!(
            Dialect::Postgres.upsert_clause(&["id".into()], &["id".into()]),
            " ON CONFLICT (\"id\") DO NOTHING"
        );
    }

    #[test]
    fn scratch_names_fit_the_identifier_limit() {
        let t = TableRef::parse(&"x".repeat(80)).unwrap();
        let n = t.scratch_name(Dialect::Postgres, "stage", "0190-abcd-ef");
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("__stage_0190_abcd_ef"), "{n}");
    }

    #[test]
    fn classifies_declared_types() {
        assert_eq!(classify_declared("bigint"), Some(ColumnType::Integer));
        assert_eq!(classify_declared("tinyint(1)"), Some(ColumnType::Boolean));
        assert_eq!(
            classify_declared("timestamp without time zone"),
            Some(ColumnType::Timestamp)
        );
        assert_eq!(classify_declared("numeric(10,2)"), Some(ColumnType::Float));
        assert_eq!(classify_declared("varchar(255)"), None);
        assert_eq!(classify_declared("interval"), None);
        assert_eq!(classify_declared("integer[]"), None);
    }
}
