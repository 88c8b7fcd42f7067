//! Message templates from policy.toml (`"Too many failed logins from {source}; ..."`): parsed
//! and checked once at load time, so a typo in a placeholder is a configuration error rather
//! than a broken message at 3 a.m. Rendering never fails; making the result safe for Dovecot
//! (one line of printable ASCII) is the wire module's job.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    UnknownPlaceholder { name: String, allowed: Vec<&'static str> },
    Unclosed,
    NotPrintableAscii,
    TooLong,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnknownPlaceholder { name, allowed } => {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                write!(f, "unknown placeholder {{{name}}}; this message can use {}", allowed.join(", "))
            }
            TemplateError::Unclosed => write!(f, "a '{{' is not closed by '}}'"),
            TemplateError::NotPrintableAscii => {
                write!(f, "must be one line of printable ASCII (mail apps show it verbatim)")
            }
            TemplateError::TooLong => write!(f, "longer than 200 characters"),
        }
    }
}

impl Template {
    /// Parses `text`, accepting only the placeholders in `allowed`.
    pub fn parse(text: &str, allowed: &[&'static str]) -> Result<Template, TemplateError> {
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(TemplateError::NotPrintableAscii);
        }
        if text.len() > 200 {
            return Err(TemplateError::TooLong);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or(TemplateError::Unclosed)?;
            let name = &after[..close];
            let known = allowed.iter().find(|a| **a == name).ok_or_else(|| TemplateError::UnknownPlaceholder {
                name: name.to_string(),
                allowed: allowed.to_vec(),
            })?;
            pieces.push(Piece::Placeholder(known));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { source: text.to_string(), pieces })
    }

    /// The text as written in policy.toml.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fills the placeholders from `value`.
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(name) => out.push_str(&value(name)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_in_order() {
        let t = Template::parse("From {source} until {until}.", &["source", "until"]).unwrap();
        let text = t.render(|name| match name {
            "source" => "203.0.113.7".into(),
            _ => "14:05".into(),
        });
        assert_eq!(text, "From 203.0.113.7 until 14:05.");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let unknown = Template::parse("{who}", &["source"]).unwrap_err();
        assert_eq!(unknown.to_string(), "unknown placeholder {who}; this message can use {source}");
        assert_eq!(Template::parse("oops {source", &["source"]), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("two\nlines", &[]), Err(TemplateError::NotPrintableAscii));
        assert_eq!(Template::parse("caf\u{e9}", &[]), Err(TemplateError::NotPrintableAscii));
        assert_eq!(Template::parse(&"x".repeat(201), &[]), Err(TemplateError::TooLong));
    }
}
