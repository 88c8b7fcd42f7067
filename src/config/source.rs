//! Stage one of loading: policy.toml's text and the `MAILWARDEN__SECTION__KEY` environment
//! overrides, checked key by key against the settings table (`settings`), strictly typed and
//! ranged, with defaults filled in from the table. Every problem is collected, each with its
//! key path and, for the file, its line. Nothing here knows what a setting means.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use super::settings::{self, Kind, SETTINGS, Setting};

/// A checked value of one setting.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Duration(Duration),
    Text(String),
    List(Vec<String>),
    /// `self_service.text`.
    TextTable(BTreeMap<String, String>),
    /// `mailboxes`, interpreted by the firewall's own types.
    Tree(toml::Table),
}

impl Value {
    /// The text of a text value as written (untrimmed: a message template keeps its spaces).
    pub fn as_text(&self) -> &str {
        match self {
            Value::Text(text) => text,
            _ => "",
        }
    }
}

/// Where a value came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// A line of the file (from 1).
    File(usize),
    Environment,
}

/// Every setting's value: what the file and the environment gave, else the table's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    values: BTreeMap<&'static str, (Value, Origin)>,
    /// Lines of the keys inside whole-section settings (`mailboxes."a@example.com"`), for
    /// the messages of the checks that read them.
    nested_lines: BTreeMap<(String, String), usize>,
}

impl Values {
    /// The value of a key of the table. Keys are `&'static str` from code, so a typo is a bug
    /// found by the first test that loads a policy.
    pub fn get(&self, key: &str) -> &Value {
        match self.values.get(key) {
            Some((value, _)) => value,
            None => panic!("{key} is not in the settings table"),
        }
    }

    /// The line of an entry of a whole-section setting, for a key path such as
    /// `mailboxes."a@example.com".rules[1]` (the entry's name quoted as Rust quotes it).
    fn entry_line(&self, key: &str) -> Option<usize> {
        let (section, rest) = key.split_once('.')?;
        self.nested_lines
            .iter()
            .find(|((s, name), _)| s == section && rest.starts_with(&format!("{name:?}")))
            .map(|(_, line)| *line)
            .filter(|line| *line > 0)
    }

    pub fn origin(&self, key: &str) -> Origin {
        self.values.get(key).map_or(Origin::Default, |(_, origin)| *origin)
    }

    /// Where a problem with `key` is, for a message: ` (line 7)`, ` (environment)` or nothing.
    pub fn at(&self, key: &str) -> String {
        if !self.values.contains_key(key) {
            return self.entry_line(key).map(|line| format!(" (line {line})")).unwrap_or_default();
        }
        match self.origin(key) {
            Origin::File(line) => format!(" (line {line})"),
            Origin::Environment => " (from the environment)".into(),
            Origin::Default => String::new(),
        }
    }

    pub fn bool(&self, key: &str) -> bool {
        matches!(self.get(key), Value::Bool(true))
    }

    pub fn integer(&self, key: &str) -> i64 {
        match self.get(key) {
            Value::Integer(n) => *n,
            _ => 0,
        }
    }

    pub fn float(&self, key: &str) -> f64 {
        match self.get(key) {
            Value::Float(f) => *f,
            _ => 0.0,
        }
    }

    pub fn duration(&self, key: &str) -> Duration {
        match self.get(key) {
            Value::Duration(d) => *d,
            _ => Duration::ZERO,
        }
    }

    pub fn text(&self, key: &str) -> &str {
        match self.get(key) {
            Value::Text(text) => text.trim(),
            _ => "",
        }
    }

    pub fn list(&self, key: &str) -> &[String] {
        match self.get(key) {
            Value::List(items) => items,
            _ => &[],
        }
    }

    pub fn text_table(&self, key: &str) -> Option<&BTreeMap<String, String>> {
        match self.get(key) {
            Value::TextTable(table) => Some(table),
            _ => None,
        }
    }

    pub fn tree(&self, key: &str) -> Option<&toml::Table> {
        match self.get(key) {
            Value::Tree(table) => Some(table),
            _ => None,
        }
    }

    /// Replaces `key`'s value by `other`'s (a reload keeping a restart-only setting).
    pub fn keep_from(&mut self, other: &Values, key: &'static str) {
        if let Some(kept) = other.values.get(key) {
            self.values.insert(key, kept.clone());
        }
    }

    /// The keys whose values differ between the two.
    pub fn changed(&self, other: &Values) -> Vec<&'static Setting> {
        SETTINGS
            .iter()
            .filter(|s| self.values.get(s.key).map(|v| &v.0) != other.values.get(s.key).map(|v| &v.0))
            .collect()
    }
}

/// Checks policy text and environment overrides against the table. `problems` gets every
/// problem found; the result holds a value for every key (the default where the given one
/// was refused), so later checks can go on and report theirs too.
pub fn read(text: &str, environment: &HashMap<String, String>, base_dir: &Path, problems: &mut Vec<String>) -> Values {
    let mut values: BTreeMap<&'static str, (Value, Origin)> = BTreeMap::new();
    for setting in SETTINGS {
        match default_value(setting).map(|value| resolved(setting, value, base_dir)) {
            Ok(value) => {
                values.insert(setting.key, (value, Origin::Default));
            }
            Err(e) => problems.push(format!("{}: the built-in default is invalid: {e}", setting.key)),
        }
    }
    let mut nested_lines = BTreeMap::new();
    match text.parse::<toml::Table>() {
        Ok(table) => {
            let lines = Lines::new(text);
            read_file(&table, base_dir, &lines, &mut values, problems);
            for (path, _) in &lines.spans {
                if let [section, name] = path.as_slice() {
                    if settings::find(section).is_some() {
                        nested_lines.insert((section.clone(), name.clone()), lines.of(&[section, name]));
                    }
                }
            }
        }
        Err(e) => problems.push(format!("not valid TOML: {}", one_line(&e.to_string()))),
    }
    let mut names: Vec<&String> = environment.keys().collect();
    names.sort();
    for name in names {
        let Some(rest) = name.strip_prefix("MAILWARDEN__") else { continue };
        let key = rest.to_ascii_lowercase().replacen("__", ".", 1);
        let shown = format!("environment {name}");
        let Some(setting) = settings::find(&key) else {
            problems.push(format!("{shown}: {key} is not a setting{}", suggestion(&key)));
            continue;
        };
        match from_environment(setting, &environment[name]) {
            Ok(value) => {
                let value = resolved(setting, value, base_dir);
                values.insert(setting.key, (value, Origin::Environment));
            }
            Err(e) => problems.push(format!("{} (from {shown}): {e}", setting.key)),
        }
    }
    Values { values, nested_lines }
}

/// A path setting relative to the policy file's folder, made absolute, so that two files
/// naming one folder differently are seen to agree.
fn resolved(setting: &Setting, value: Value, base_dir: &Path) -> Value {
    match (setting.kind, value) {
        (Kind::Path, Value::Text(text)) if !text.trim().is_empty() => {
            let path = Path::new(text.trim());
            let path = if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) };
            Value::Text(path.display().to_string())
        }
        (_, value) => value,
    }
}

fn read_file(
    table: &toml::Table,
    base_dir: &Path,
    lines: &Lines,
    values: &mut BTreeMap<&'static str, (Value, Origin)>,
    problems: &mut Vec<String>,
) {
    // Reported in the order of the file, whatever order the parser keeps keys in.
    let mut found: Vec<(usize, String)> = Vec::new();
    for (section, content) in table {
        let whole = settings::find(section);
        if let Some(setting) = whole.filter(|s| s.key == section.as_str()) {
            let line = lines.of(&[section]);
            match check(setting, content) {
                Ok(value) => {
                    let value = resolved(setting, value, base_dir);
                    values.insert(setting.key, (value, Origin::File(line)));
                }
                Err(e) => found.push((line, format!("{section}: {e} (line {line})"))),
            }
            continue;
        }
        if !settings::sections().contains(&section.as_str()) {
            let line = lines.of(&[section]);
            let sections = settings::sections().join(", ");
            found.push((
                line,
                format!("{section}: not a section of the policy (line {line}); the sections are {sections}"),
            ));
            continue;
        }
        let Some(keys) = content.as_table() else {
            let line = lines.of(&[section]);
            found.push((line, format!("{section}: must be a section ([{section}]) (line {line})")));
            continue;
        };
        for (name, given) in keys {
            let key = format!("{section}.{name}");
            let line = lines.of(&[section, name]);
            let Some(setting) = settings::find(&key) else {
                found.push((line, format!("{key}: not a setting (line {line}){}", suggestion(&key))));
                continue;
            };
            match check(setting, given) {
                Ok(value) => {
                    let value = resolved(setting, value, base_dir);
                    values.insert(setting.key, (value, Origin::File(line)));
                }
                Err(e) => found.push((line, format!("{key}: {e} (line {line})"))),
            }
        }
    }
    found.sort_by_key(|(line, _)| *line);
    problems.extend(found.into_iter().map(|(_, problem)| problem));
}

/// ` ; did you mean autoban.max_failures?` for a near miss, else nothing.
fn suggestion(key: &str) -> String {
    let best = SETTINGS.iter().map(|s| (distance(key, s.key), s.key)).min_by_key(|(d, _)| *d);
    match best {
        Some((d, near)) if d <= 3 => format!("; did you mean {near}?"),
        _ => String::new(),
    }
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn default_value(setting: &Setting) -> Result<Value, String> {
    let wrapped = format!("value = {}", setting.default);
    let table: toml::Table = wrapped.parse().map_err(|e: toml::de::Error| one_line(&e.to_string()))?;
    let value = table.get("value").ok_or("no value")?;
    check(setting, value)
}

fn type_name(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the text {s:?}"),
        toml::Value::Integer(n) => format!("the integer {n}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// Checks one value from the file against its setting: the type exactly, then the range.
fn check(setting: &Setting, given: &toml::Value) -> Result<Value, String> {
    let found = || type_name(given);
    match setting.kind {
        Kind::Bool => {
            given.as_bool().map(Value::Bool).ok_or_else(|| format!("expected true or false, found {}", found()))
        }
        Kind::Integer { .. } => match given {
            toml::Value::Integer(n) => ranged(setting, *n),
            _ => Err(format!("expected an integer, found {}", found())),
        },
        Kind::Float { min, max } => {
            let number = match given {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(n) => *n as f64,
                _ => return Err(format!("expected a number, found {}", found())),
            };
            if number.is_finite() && (min..=max).contains(&number) {
                Ok(Value::Float(number))
            } else {
                Err(format!("{number} is outside {min:.1}..={max:.1}"))
            }
        }
        Kind::Duration { .. }
        | Kind::Text
        | Kind::Path
        | Kind::Choice(_)
        | Kind::Template(_)
        | Kind::Secret
        | Kind::Password => match given {
            toml::Value::String(text) => from_text(setting, text),
            _ => Err(format!("expected text in quotes, found {}", found())),
        },
        Kind::List => match given {
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    other => Err(format!("item {i}: expected text in quotes, found {}", type_name(other))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            _ => Err(format!("expected a list such as [\"192.0.2.0/24\"], found {}", found())),
        },
        Kind::TextTable => match given {
            toml::Value::Table(table) => table
                .iter()
                .map(|(name, text)| match text {
                    toml::Value::String(text) => Ok((name.clone(), text.clone())),
                    other => Err(format!("{name}: expected text in quotes, found {}", type_name(other))),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Value::TextTable),
            _ => Err(format!("expected a table of texts, found {}", found())),
        },
        Kind::Webhooks => match given {
            toml::Value::Table(table) => Ok(Value::Tree(table.clone())),
            _ => Err(format!("expected a table of endpoints such as [webhooks.siem], found {}", found())),
        },
        Kind::RuleSets => match given {
            toml::Value::Table(table) => Ok(Value::Tree(table.clone())),
            _ => Err(format!("expected a table of rule sets such as [mailboxes.\"a@example.com\"], found {}", found())),
        },
    }
}

fn ranged(setting: &Setting, n: i64) -> Result<Value, String> {
    match setting.kind {
        Kind::Integer { min, max } if !(min..=max).contains(&n) => Err(format!("{n} is outside {min}..={max}")),
        _ => Ok(Value::Integer(n)),
    }
}

/// A text-valued setting from its text (the file's string or the environment's value).
fn from_text(setting: &Setting, text: &str) -> Result<Value, String> {
    match setting.kind {
        Kind::Duration { min, max } => match humantime::parse_duration(text.trim()) {
            Ok(d) if d >= min && d <= max => Ok(Value::Duration(d)),
            Ok(_) => Err(format!(
                "{text:?} is outside {}..={}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )),
            Err(e) => Err(format!("{text:?} is not a duration such as \"20m\" or \"1h 30m\" ({e})")),
        },
        Kind::Choice(words) => {
            if words.contains(&text.trim()) {
                Ok(Value::Text(text.trim().to_string()))
            } else {
                let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
                Err(format!("{text:?} is not one of {}", quoted.join(", ")))
            }
        }
        _ => Ok(Value::Text(text.to_string())),
    }
}

/// An environment override: text, parsed by the key's type.
fn from_environment(setting: &Setting, text: &str) -> Result<Value, String> {
    match setting.kind {
        Kind::Bool => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(format!("expected true or false, found {other:?}")),
        },
        Kind::Integer { .. } => match text.trim().parse::<i64>() {
            Ok(n) => ranged(setting, n),
            Err(_) => Err(format!("expected an integer, found {text:?}")),
        },
        Kind::Float { .. } => match text.trim().parse::<f64>() {
            Ok(f) => check(setting, &toml::Value::Float(f)),
            Err(_) => Err(format!("expected a number, found {text:?}")),
        },
        Kind::List => Ok(Value::List(
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect(),
        )),
        Kind::TextTable | Kind::RuleSets | Kind::Webhooks => Err("can only be set in the file".into()),
        _ => from_text(setting, text),
    }
}

/// A TOML parser message on one line: its first line (which names the line and column) and
/// its explanation, without the quoted snippet and the caret under it.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let explanation: Vec<&str> =
        lines.filter(|l| !l.starts_with('|') && !l.chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    if explanation.is_empty() { first } else { format!("{first}: {}", explanation.join("; ")) }
}

/// Finds the line of a key in the file, from the parser's spans.
struct Lines {
    /// The byte offset where each line after the first starts, in order: a key's line is found
    /// by a binary search, so naming the lines of a policy with 10,000 mailbox sections stays
    /// linear (counting the newlines before each key took 37 billion instructions for one).
    line_starts: Vec<usize>,
    spans: HashMap<Vec<String>, usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        let mut spans = HashMap::new();
        if let Ok(table) = toml::de::DeTable::parse(text) {
            for (key, value) in table.get_ref() {
                let section = key.get_ref().to_string();
                spans.insert(vec![section.clone()], key.span().start);
                if let toml::de::DeValue::Table(inner) = value.get_ref() {
                    for (name, _) in inner {
                        spans.insert(vec![section.clone(), name.get_ref().to_string()], name.span().start);
                    }
                }
            }
        }
        let line_starts = text.match_indices('\n').map(|(at, _)| at + 1).collect();
        Lines { line_starts, spans }
    }

    /// The line (from 1) of the key path, or 0 when the parser did not say.
    fn of(&self, path: &[&str]) -> usize {
        let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
        match self.spans.get(&path) {
            // The lines that start at or before the key's offset, plus the first.
            Some(offset) => self.line_starts.partition_point(|start| start <= offset) + 1,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let environment = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut problems = Vec::new();
        read(text, &environment, Path::new("/etc/mailwarden"), &mut problems);
        problems
    }

    #[test]
    fn every_default_in_the_table_passes_its_own_check() {
        assert_eq!(problems_of("", &[]), Vec::<String>::new());
    }

    #[test]
    fn types_are_strict_and_each_problem_names_its_key_and_line() {
        let text = "[autoban]\nmax_failures = 5.7\nunknown_accounts_count_double = \"yes\"\n\n[server]\nstate_dir = 17\nmax_connections = \"50\"\n";
        let problems = problems_of(text, &[]);
        assert_eq!(
            problems,
            [
                "autoban.max_failures: expected an integer, found the number 5.7 (line 2)",
                "autoban.unknown_accounts_count_double: expected true or false, found the text \"yes\" (line 3)",
                "server.state_dir: expected text in quotes, found the integer 17 (line 6)",
                "server.max_connections: expected an integer, found the text \"50\" (line 7)",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_named_with_a_suggestion() {
        let problems = problems_of("[autoban]\nmax_failure = 5\n[autobahn]\nx = 1\n", &[]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("autoban.max_failure: not a setting (line 2); did you mean autoban.max_failures?"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("autobahn: not a section of the policy (line 3)"), "{problems:?}");
    }

    #[test]
    fn environment_overrides_are_parsed_by_the_keys_type() {
        let environment = [
            ("MAILWARDEN__AUTOBAN__MAX_FAILURES".to_string(), "7".to_string()),
            ("MAILWARDEN__NETWORKS__TRUSTED".to_string(), "192.0.2.0/24, 2001:db8::/32".to_string()),
            ("MAILWARDEN__SERVER__RELOAD_ON_CHANGE".to_string(), "true".to_string()),
        ]
        .into_iter()
        .collect();
        let mut problems = Vec::new();
        let values = read("[autoban]\nmax_failures = 5\n", &environment, Path::new("/etc/mailwarden"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(values.integer("autoban.max_failures"), 7);
        assert_eq!(values.origin("autoban.max_failures"), Origin::Environment);
        assert_eq!(values.list("networks.trusted"), ["192.0.2.0/24", "2001:db8::/32"]);
        assert!(values.bool("server.reload_on_change"));

        let problems =
            problems_of("", &[("MAILWARDEN__AUTOBAN__MAX_FAILURES", "5.7"), ("MAILWARDEN__AUTOBAN__NOPE", "1")]);
        assert_eq!(
            problems,
            [
                "autoban.max_failures (from environment MAILWARDEN__AUTOBAN__MAX_FAILURES): expected an integer, found \"5.7\"",
                "environment MAILWARDEN__AUTOBAN__NOPE: autoban.nope is not a setting",
            ]
        );
    }

    #[test]
    fn a_broken_file_is_reported_with_its_line() {
        let problems = problems_of("[autoban]\nmax_failures = = 5\n", &[]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("line 2"), "{problems:?}");
    }
}
