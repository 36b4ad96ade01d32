//! The `labelSelector` query parameter: Kubernetes label-selector syntax (`a=b`, `a==b`, `a!=b`,
//! `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-separated, all must hold), parsed once per
//! request and matched against each metric value's labels.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One comma-separated term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

/// What a requirement asks of its key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals(String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String),
    /// `key in (a,b)`: the label is present with one of these values.
    In(BTreeSet<String>),
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn(BTreeSet<String>),
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// A selector that does not parse; answered with a 400 `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl Selector {
    /// The selector that matches every set of labels.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses Kubernetes label-selector syntax.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError {
            selector: text.to_string(),
            reason,
        };
        let tokens = lex(text).map_err(fail)?;
        let requirements = Parser { tokens, pos: 0 }.selector().map_err(fail)?;
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(set) => value.is_some_and(|v| set.contains(v)),
            Operator::NotIn(set) => !value.is_some_and(|v| set.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Operator::Equals(v) => write!(f, "{k}={v}")?,
                Operator::NotEquals(v) => write!(f, "{k}!={v}")?,
                Operator::In(s) => write!(f, "{k} in ({})", join(s))?,
                Operator::NotIn(s) => write!(f, "{k} notin ({})", join(s))?,
                Operator::Exists => write!(f, "{k}")?,
                Operator::DoesNotExist => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Comma,
    Open,
    Close,
}

/// Splits a selector into words and operators; a word ends at whitespace or an operator.
fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '=' if chars.next_if_eq(&'=').is_some() => Token::DoubleEq,
            '=' => Token::Eq,
            '!' if chars.next_if_eq(&'=').is_some() => Token::NotEq,
            '!' => Token::Bang,
            '<' | '>' => return Err(format!("operator {c:?} is not supported")),
            c => {
                let mut word = String::from(c);
                while let Some(n) = chars.next_if(|n| !is_special(*n)) {
                    word.push(n);
                }
                Token::Word(word)
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '(' | ')' | '=' | '!' | '<' | '>')
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn selector(mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(requirements);
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => return Ok(requirements),
                Some(Token::Comma) => continue,
                Some(t) => return Err(format!("expected ',' or the end, found {t:?}")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = match self.next() {
            Some(Token::Bang) => (self.key()?, Operator::DoesNotExist),
            Some(Token::Word(key)) => {
                let op = self.operator()?;
                (key, op)
            }
            other => return Err(format!("expected a label key, found {other:?}")),
        };
        validate_key(&key)?;
        match &op {
            Operator::Equals(v) | Operator::NotEquals(v) => validate_value(v)?,
            Operator::In(set) | Operator::NotIn(set) => {
                set.iter().try_for_each(|v| validate_value(v))?
            }
            Operator::Exists | Operator::DoesNotExist => {}
        }
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(key)) => Ok(key),
            other => Err(format!("expected a label key after '!', found {other:?}")),
        }
    }

    /// What follows a key: an operator with its value(s), or nothing (`key` alone: exists).
    fn operator(&mut self) -> Result<Operator, String> {
        match self.peek() {
            None | Some(Token::Comma) => return Ok(Operator::Exists),
            _ => {}
        }
        match self.next() {
            Some(Token::Eq | Token::DoubleEq) => Ok(Operator::Equals(self.value()?)),
            Some(Token::NotEq) => Ok(Operator::NotEquals(self.value()?)),
            Some(Token::Word(w)) if w == "in" => Ok(Operator::In(self.set()?)),
            Some(Token::Word(w)) if w == "notin" => Ok(Operator::NotIn(self.set()?)),
            other => Err(format!("expected an operator, found {other:?}")),
        }
    }

    /// The value after `=`/`==`/`!=`; empty when the term ends there (`a=` selects `a: ""`).
    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Word(_)) => match self.next() {
                Some(Token::Word(v)) => Ok(v),
                _ => Err("expected a value".to_string()),
            },
            Some(t) => Err(format!("expected a value, found {t:?}")),
        }
    }

    /// `(v1, v2, ...)`: at least one value.
    fn set(&mut self) -> Result<BTreeSet<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("expected '(' after in/notin".to_string());
        }
        let mut values = BTreeSet::new();
        loop {
            match self.next() {
                Some(Token::Word(v)) => values.insert(v),
                Some(Token::Close) if values.is_empty() => {
                    return Err("in/notin needs at least one value".to_string())
                }
                other => return Err(format!("expected a value in the set, found {other:?}")),
            };
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                other => return Err(format!("expected ',' or ')' in the set, found {other:?}")),
            }
        }
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain, the name as a label value but not
/// empty (the API server's rules, so a selector it would reject is rejected here too).
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid label key prefix {p:?}"));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if is_label_value(value) {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// Empty, or at most 63 of `[A-Za-z0-9._-]` beginning and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(alnum)
            && v.ends_with(alnum)
            && v.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = Selector::parse("a=b, c==d,e!=f,g in (x, y),h notin (z),i,!j").unwrap();
        let ops: Vec<(&str, Operator)> = s
            .requirements()
            .iter()
            .map(|r| (r.key.as_str(), r.op.clone()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("a", Operator::Equals("b".into())),
                ("c", Operator::Equals("d".into())),
                ("e", Operator::NotEquals("f".into())),
                ("g", Operator::In(set(&["x", "y"]))),
                ("h", Operator::NotIn(set(&["z"]))),
                ("i", Operator::Exists),
                ("j", Operator::DoesNotExist),
            ]
        );
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse("  ").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("model", "llama")])));
    }

    #[test]
    fn matching_follows_kubernetes_semantics() {
        let l = labels(&[("pool", "chat"), ("model", "llama"), ("tier", "")]);
        let m = |sel: &str| Selector::parse(sel).unwrap().matches(&l);
        assert!(m("pool=chat,model==llama"));
        assert!(!m("pool=chat,model=mistral"));
        // != and notin also hold when the label is absent.
        assert!(m("zone!=eu") && m("zone notin (eu)") && m("model!=mistral"));
        assert!(!m("model!=llama") && !m("model notin (llama,qwen)"));
        assert!(m("model in (qwen,llama)") && !m("zone in (eu)"));
        assert!(m("pool") && !m("zone") && m("!zone") && !m("!pool"));
        // `tier=` selects the empty value, which is not absence.
        assert!(m("tier=") && !m("zone="));
    }

    #[test]
    fn accepts_prefixed_keys_and_round_trips_through_display() {
        let s = Selector::parse("lookahead.dev/pool=chat,app.kubernetes.io/name in (a,b)").unwrap();
        assert_eq!(
            s.to_string(),
            "lookahead.dev/pool=chat,app.kubernetes.io/name in (a,b)"
        );
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "a=b,",
            ",a=b",
            "a in ()",
            "a in (x",
            "a in x",
            "a notin (x,)",
            "a b",
            "a=b=c",
            "!",
            "!a=b",
            "a>1",
            "=b",
            "a=(b)",
            "-a=b",
            "a=-b",
            "Upper.Case/a=b",
            "a=this-value-is-far-too-long-for-a-kubernetes-label-value-sixty-four",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert_eq!(err.selector, bad);
            assert!(!err.reason.is_empty(), "{bad}");
        }
    }
}
