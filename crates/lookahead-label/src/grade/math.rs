//! Final-answer grading for math-style records (GSM8K, MATH) that carry `reference.answer`:
//! extract the response's final answer (last `\boxed{}`, else "The answer is", else the last
//! number), normalise LaTeX and units, and compare as strings or numbers.

use std::sync::LazyLock;

use regex::Regex;

/// Patterns are constants checked by the tests below; `None` (never expected) makes the step a no-op
/// instead of a panic.
type Pattern = LazyLock<Option<Regex>>;

fn pattern(p: &str) -> Option<Regex> {
    Regex::new(p).ok()
}

static ANSWER_IS: Pattern =
    LazyLock::new(|| pattern(r"[Tt]he (?:final )?answer is:?\s*\$?([^\n$]+)"));
static NUMBER: Pattern = LazyLock::new(|| pattern(r"-?\d[\d,]*(?:\.\d+)?"));
static TEXT_MACRO: Pattern =
    LazyLock::new(|| pattern(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}"));
static THOUSANDS: Pattern = LazyLock::new(|| pattern(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$"));
static SHORT_FRAC: Pattern = LazyLock::new(|| pattern(r"\\frac(\d)(\d)"));
static SHORT_SQRT: Pattern = LazyLock::new(|| pattern(r"\\sqrt(\w)"));
static VAR_ASSIGN: Pattern = LazyLock::new(|| pattern(r"^[a-zA-Z]="));
static FRACTION: Pattern =
    LazyLock::new(|| pattern(r"^(-?)(?:\\frac\{(\d+)\}\{(\d+)\}|(\d+)/(\d+))$"));
static NUMBER_WITH_UNIT: Pattern = LazyLock::new(|| pattern(r"^(-?\d+(?:\.\d+)?)[a-z]+$"));

/// The content of the last `\boxed{...}` / `\fbox{...}`, braces balanced.
pub fn last_boxed(text: &str) -> Option<&str> {
    let start = [text.rfind("\\boxed"), text.rfind("\\fbox")]
        .into_iter()
        .flatten()
        .max()?;
    let open = start + text[start..].find('{')?;
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[open + 1..open + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The final answer a response states, if any.
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(b) = last_boxed(text) {
        return Some(b.to_string());
    }
    if let Some(c) = ANSWER_IS
        .as_ref()
        .and_then(|re| re.captures_iter(text).last())
    {
        return c.get(1).map(|m| m.as_str().to_string());
    }
    let last_number = NUMBER.as_ref()?.find_iter(text).last();
    last_number.map(|m| m.as_str().to_string())
}

/// Canonical form of an answer: no math delimiters, spacing macros, `\left`/`\right`, `\text{}`
/// wrappers, degree/percent/dollar signs, whitespace, trailing period, `x=` prefix or thousands
/// separators.
pub fn normalize(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    for (from, to) in [
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("\\left", ""),
        ("\\right", ""),
        ("dfrac", "frac"),
        ("tfrac", "frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
    ] {
        s = s.replace(from, to);
    }
    s = replace_all(&TEXT_MACRO, &s, "$1");
    s.retain(|c| !c.is_whitespace());
    while s.ends_with('.') {
        s.pop();
    }
    if is_match(&VAR_ASSIGN, &s) {
        s = s[2..].to_string();
    }
    if is_match(&THOUSANDS, &s) {
        s.retain(|c| c != ',');
    }
    s = replace_all(&SHORT_FRAC, &s, "\\frac{$1}{$2}");
    s = replace_all(&SHORT_SQRT, &s, "\\sqrt{$1}");
    if let Some((int, frac)) = s.split_once('.') {
        if !int.is_empty()
            && int
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
            && !frac.is_empty()
            && frac.bytes().all(|b| b == b'0')
        {
            s = int.to_string();
        }
    }
    s
}

fn is_match(re: &Pattern, s: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(s))
}

fn replace_all(re: &Pattern, s: &str, with: &str) -> String {
    match re.as_ref() {
        Some(re) => re.replace_all(s, with).into_owned(),
        None => s.to_string(),
    }
}

/// The numeric value of a normalised answer: a decimal or a simple fraction.
fn numeric_value(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let c = FRACTION.as_ref()?.captures(s)?;
    let (num, den) = match (c.get(2), c.get(3)) {
        (Some(n), Some(d)) => (n.as_str(), d.as_str()),
        _ => (c.get(4)?.as_str(), c.get(5)?.as_str()),
    };
    let den: f64 = den.parse().ok()?;
    if den == 0.0 {
        return None;
    }
    let v = num.parse::<f64>().ok()? / den;
    Some(if c.get(1).is_some_and(|m| !m.as_str().is_empty()) {
        -v
    } else {
        v
    })
}

/// Whether `response` states the `reference` answer.
pub fn is_correct(response: &str, reference: &str) -> bool {
    let Some(answer) = extract_answer(response) else {
        return false;
    };
    let (a, r) = (normalize(&answer), normalize(reference));
    if a == r {
        return true;
    }
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * y.abs().max(1.0);
    match (numeric_value(&a), numeric_value(&r)) {
        (Some(x), Some(y)) => close(x, y),
        // "18dollars": a number followed by a unit word.
        (None, Some(y)) => NUMBER_WITH_UNIT
            .as_ref()
            .and_then(|re| re.captures(&a))
            .and_then(|c| c.get(1)?.as_str().parse::<f64>().ok())
            .is_some_and(|x| close(x, y)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for re in [
            &ANSWER_IS,
            &NUMBER,
            &TEXT_MACRO,
            &THOUSANDS,
            &SHORT_FRAC,
            &SHORT_SQRT,
            &VAR_ASSIGN,
            &FRACTION,
            &NUMBER_WITH_UNIT,
        ] {
            assert!(re.is_some());
        }
    }

    #[test]
    fn extracts_the_last_boxed_answer_with_nested_braces() {
        assert_eq!(
            last_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}"),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(last_boxed(r"\boxed{unclosed"), None);
        assert_eq!(
            extract_answer("so.\nThe answer is: 42").as_deref(),
            Some("42")
        );
        assert_eq!(
            extract_answer("we get 3 then 1,250 apples").as_deref(),
            Some("1,250")
        );
        assert_eq!(extract_answer("no digits here"), None);
    }

    #[test]
    fn equal_answers_in_other_notation_are_correct() {
        assert!(is_correct(r"$\boxed{\dfrac{1}{2}}$", r"\frac{1}{2}"));
        assert!(is_correct(r"\boxed{0.5}", r"\frac12"));
        assert!(is_correct(r"\boxed{1,250}", "1250"));
        assert!(is_correct(r"\boxed{18 \text{ dollars}}", "18"));
        assert!(is_correct(r"\boxed{x = 5}", "5"));
        assert!(is_correct(r"\boxed{90^\circ}", "90"));
        assert!(is_correct(r"\boxed{3.00}", "3"));
        assert!(is_correct(r"\boxed{\left( 3, 4 \right)}", "(3,4)"));
        assert!(is_correct("The answer is: 10 miles", "10"));
    }

    #[test]
    fn different_answers_are_wrong() {
        assert!(!is_correct(r"\boxed{E}", "A"));
        assert!(!is_correct(r"\boxed{12\sqrt[3]{10}}", "60"));
        assert!(!is_correct(r"\boxed{-3}", "3"));
        assert!(!is_correct("nothing", "3"));
        assert!(!is_correct(r"\boxed{1/0}", "1"));
    }
}
