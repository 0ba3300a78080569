//! Row filter expressions: `status = 'active' and amount > 10`.
//!
//! One small language serves both flow filters (over batches) and the host language's `where`
//! clauses (over listed objects). Comparisons follow SQL: anything compared with null is false,
//! `is null` tests for it. Numbers compare numerically, numeric text included.

use std::cmp::Ordering;

use etl_model::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Value),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, String, bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "=" | "==" => CmpOp::Eq,
            "!=" | "<>" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => return None,
        })
    }
    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' | '"' | '`' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated {quote}-quoted text in filter")),
                        Some(&q) if q == quote && chars.get(i + 1) == Some(&quote) => {
                            s.push(q);
                            i += 2;
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(if quote == '\'' {
                    Tok::Str(s)
                } else {
                    Tok::Ident(s)
                });
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if matches!(two.as_str(), "==" | "!=" | "<>" | "<=" | ">=") {
                    out.push(Tok::Op(two));
                    i += 2;
                } else if c == '!' {
                    return Err("'!' must be followed by '=' in a filter".into());
                } else {
                    out.push(Tok::Op(c.to_string()));
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character '{other}' in filter")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.peek_kw(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_kw("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_kw("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_kw("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }
    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let op = CmpOp::parse(&op).ok_or_else(|| format!("unknown operator '{op}'"))?;
            let right = self.operand()?;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(right)));
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            if !self.eat_kw("null") {
                return Err("expected 'null' after 'is' in filter".into());
            }
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        let negated = self.eat_kw("not");
        if self.eat_kw("in") {
            if self.peek() != Some(&Tok::LParen) {
                return Err("expected '(' after 'in' in filter".into());
            }
            self.pos += 1;
            let mut items = vec![self.operand()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                items.push(self.operand()?);
            }
            if self.peek() != Some(&Tok::RParen) {
                return Err("expected ')' to close the 'in' list in filter".into());
            }
            self.pos += 1;
            return Ok(Expr::In(Box::new(left), items, negated));
        }
        if self.eat_kw("like") {
            return match self.operand()? {
                Expr::Literal(Value::Text(p)) => Ok(Expr::Like(Box::new(left), p, negated)),
                _ => Err("'like' needs a quoted pattern such as 'abc%'".into()),
            };
        }
        if negated {
            return Err("expected 'in' or 'like' after 'not'".into());
        }
        Ok(left)
    }
    fn operand(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned().ok_or("the filter ends too early")?;
        self.pos += 1;
        Ok(match tok {
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err("missing ')' in filter".into());
                }
                self.pos += 1;
                e
            }
            Tok::Str(s) => Expr::Literal(Value::Text(s)),
            Tok::Num(n) => Expr::Literal(match n.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(n.parse().map_err(|_| format!("'{n}' is not a number"))?),
            }),
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") => Expr::Literal(Value::Null),
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => Expr::Literal(Value::Bool(true)),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => Expr::Literal(Value::Bool(false)),
            Tok::Ident(w) => Expr::Column(w),
            other => return Err(format!("unexpected {} in filter", describe(&other))),
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Num(s) | Tok::Op(s) => format!("'{s}'"),
        Tok::Str(s) => format!("'{s}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
    }
}

impl Expr {
    /// Parses a filter; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let toks = lex(text)?;
        if toks.is_empty() {
            return Err("the filter is empty".into());
        }
        let mut p = Parser { toks, pos: 0 };
        let e = p.or()?;
        if let Some(t) = p.peek() {
            return Err(format!(
                "unexpected {} in filter; combine conditions with 'and' / 'or'",
                describe(t)
            ));
        }
        Ok(e)
    }

    /// Column names the expression reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit_columns(&mut |c| out.push(c));
        out
    }

    fn visit_columns<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Expr::Column(c) => f(c),
            Expr::Literal(_) => {}
            Expr::Not(e) | Expr::IsNull(e, _) | Expr::Like(e, _, _) => e.visit_columns(f),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(a, _, b) => {
                a.visit_columns(f);
                b.visit_columns(f);
            }
            Expr::In(e, items, _) => {
                e.visit_columns(f);
                items.iter().for_each(|i| i.visit_columns(f));
            }
        }
    }

    /// Whether the row satisfies the expression; `get` reads a column (null when absent).
    pub fn matches(&self, get: &dyn Fn(&str) -> Value) -> bool {
        self.truth(get) == Some(true)
    }

    fn value(&self, get: &dyn Fn(&str) -> Value) -> Value {
        match self {
            Expr::Column(c) => get(c),
            Expr::Literal(v) => v.clone(),
            other => match other.truth(get) {
                Some(b) => Value::Bool(b),
                None => Value::Null,
            },
        }
    }

    /// Three-valued logic: `None` is SQL's unknown.
    fn truth(&self, get: &dyn Fn(&str) -> Value) -> Option<bool> {
        match self {
            Expr::Column(_) | Expr::Literal(_) => match self.value(get) {
                Value::Null => None,
                Value::Bool(b) => Some(b),
                Value::Int(i) => Some(i != 0),
                Value::Float(f) => Some(f != 0.0),
                Value::Text(s) => Some(!s.is_empty()),
            },
            Expr::Not(e) => e.truth(get).map(|b| !b),
            Expr::And(a, b) => match (a.truth(get), b.truth(get)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(a, b) => match (a.truth(get), b.truth(get)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Compare(a, op, b) => {
                let (x, y) = (a.value(get), b.value(get));
                if x.is_null() || y.is_null() {
                    return None;
                }
                Some(op.holds(loose_compare(&x, &y)))
            }
            Expr::IsNull(e, negated) => Some(e.value(get).is_null() != *negated),
            Expr::In(e, items, negated) => {
                let x = e.value(get);
                if x.is_null() {
                    return None;
                }
                let found = items
                    .iter()
                    .any(|i| loose_compare(&x, &i.value(get)) == Ordering::Equal);
                Some(found != *negated)
            }
            Expr::Like(e, pattern, negated) => match e.value(get) {
                Value::Null => None,
                v => Some(like(&v.to_string(), pattern) != *negated),
            },
        }
    }
}

/// Comparison that also treats booleans and their text forms alike and ignores case for
/// text equality of enum-like words ("Error" = 'error').
fn loose_compare(x: &Value, y: &Value) -> Ordering {
    match (x, y) {
        (Value::Bool(a), Value::Text(b)) | (Value::Text(b), Value::Bool(a)) => {
            if a.to_string().eq_ignore_ascii_case(b) {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        }
        (Value::Text(a), Value::Text(b)) if a.eq_ignore_ascii_case(b) => Ordering::Equal,
        _ => x.compare(y),
    }
}

/// SQL LIKE: `%` any run, `_` one character; case-insensitive.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> impl Fn(&str) -> Value + use<> {
        let pairs: Vec<(String, Value)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |c: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == c)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        }
    }

    #[test]
    fn evaluates_the_issue_example() {
        let e = Expr::parse("status = 'active' and amount > 10").unwrap();
        assert!(e.matches(&row(&[
            ("status", "active".into()),
            ("amount", Value::Text("12.5".into()))
        ])));
        assert!(!e.matches(&row(&[
            ("status", "active".into()),
            ("amount", Value::Int(10))
        ])));
        assert!(!e.matches(&row(&[
            ("status", "closed".into()),
            ("amount", Value::Int(99))
        ])));
        assert!(
            !e.matches(&row(&[("status", "active".into())])),
            "null amount is unknown, so filtered out"
        );
    }

    #[test]
    fn supports_or_not_in_like_null_parens() {
        let r = row(&[
            ("a", Value::Int(1)),
            ("b", "Hello".into()),
            ("c", Value::Null),
        ]);
        for (text, want) in [
            ("a = 1 or b = 'x'", true),
            ("not (a = 1)", false),
            ("a in (1, 2)", true),
            ("a not in (1, 2)", false),
            ("b like 'he%'", true),
            ("b not like '%z%'", true),
            ("c is null", true),
            ("c is not null", false),
            ("c = 1 or a >= 1", true),
            ("a <> 1", false),
            ("\"b\" = 'hello'", true),
        ] {
            assert_eq!(Expr::parse(text).unwrap().matches(&r), want, "{text}");
        }
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(
            Expr::parse("a = 'x").unwrap_err(),
            "unterminated '-quoted text in filter"
        );
        assert_eq!(
            Expr::parse("a = 1 b = 2").unwrap_err(),
            "unexpected 'b' in filter; combine conditions with 'and' / 'or'"
        );
        assert!(Expr::parse("").is_err());
        assert!(Expr::parse("a in 1").is_err());
        assert!(Expr::parse("(a = 1").is_err());
    }
}
