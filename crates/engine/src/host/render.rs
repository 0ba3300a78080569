//! Readable renderings: aligned tables and key/value blocks.

/// An aligned text table; long cells are cut so a row stays on one line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    const MAX: usize = 60;
    let cut = |s: &str| -> String {
        let one_line = s.replace('\n', " ");
        if one_line.chars().count() > MAX {
            let mut t: String = one_line.chars().take(MAX - 1).collect();
            t.push('…');
            t
        } else {
            one_line
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cols: Vec<&str>| -> String {
        cols.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for row in &cells {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// `key: value` lines, keys aligned.
pub fn pairs(items: &[(&str, String)]) -> String {
    let w = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    items
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k:<w$}  {v}", w = w + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(
            &["name", "type"],
            &[
                vec!["warehouse".into(), "sqlite".into()],
                vec!["a".into(), "http".into()],
            ],
        );
        assert_eq!(
            t,
            "name       type\n---------  ------\nwarehouse  sqlite\na          http"
        );
    }
}
