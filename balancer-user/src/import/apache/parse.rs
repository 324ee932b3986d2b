//! Apache config text into directives: one directive a logical line (`\` at the end of a line
//! continues it), arguments split on whitespace with `"…"` and `'…'` quoting, `#` comments on
//! their own line, and `<Section args>` … `</Section>` nested to any depth.

use std::fmt;

/// One directive or section, where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The first line of the directive (1-based).
    pub line: usize,
    /// The name as written (`ProxyPass`, or `VirtualHost` for `<VirtualHost …>`).
    pub name: String,
    /// The arguments, unquoted.
    pub args: Vec<String>,
    /// The directive as written, continuation lines joined by a space, trimmed
    /// (`<VirtualHost *:80>` for a section).
    pub text: String,
    /// A section's contents; `None` for a plain directive.
    pub children: Option<Vec<Directive>>,
}

impl Directive {
    /// Whether this is the directive or section `name` (Apache's names are case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Why the text is not an Apache config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole config into its top-level directives and sections.
pub fn parse(text: &str) -> Result<Vec<Directive>, ParseError> {
    // Open sections: the section itself, with the directives read into it so far.
    let mut stack: Vec<Directive> = Vec::new();
    let mut top = Vec::new();
    for (line, logical) in logical_lines(text) {
        let trimmed = logical.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(closing) = trimmed.strip_prefix("</") {
            let name = closing.trim_end_matches('>').trim();
            let Some(open) = stack.pop() else {
                return Err(ParseError {
                    line,
                    message: format!("</{name}> closes no open section"),
                });
            };
            if !open.is(name) {
                return Err(ParseError {
                    line,
                    message: format!(
                        "</{name}> does not close <{}> opened at line {}",
                        open.name, open.line
                    ),
                });
            }
            match stack.last_mut() {
                Some(parent) => parent.children.get_or_insert_with(Vec::new).push(open),
                None => top.push(open),
            }
            continue;
        }
        if let Some(opening) = trimmed.strip_prefix('<') {
            let Some(inside) = opening.strip_suffix('>') else {
                return Err(ParseError {
                    line,
                    message: format!("section {trimmed:?} has no closing '>'"),
                });
            };
            let (name, args) = split_name(inside, line)?;
            stack.push(Directive {
                line,
                name,
                args,
                text: trimmed.to_string(),
                children: Some(Vec::new()),
            });
            continue;
        }
        let (name, args) = split_name(trimmed, line)?;
        let directive = Directive {
            line,
            name,
            args,
            text: trimmed.to_string(),
            children: None,
        };
        match stack.last_mut() {
            Some(parent) => parent.children.get_or_insert_with(Vec::new).push(directive),
            None => top.push(directive),
        }
    }
    if let Some(open) = stack.pop() {
        return Err(ParseError {
            line: open.line,
            message: format!("<{}> is never closed (no </{}>)", open.name, open.name),
        });
    }
    Ok(top)
}

/// Physical lines joined where one ends in `\`, each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        let raw = raw.trim_end();
        if let Some(head) = raw.strip_suffix('\\') {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(head.trim());
            pending = Some((start, joined));
        } else {
            if !joined.is_empty() {
                joined.push(' ');
                joined.push_str(raw.trim());
            } else {
                joined.push_str(raw);
            }
            lines.push((start, joined));
        }
    }
    // A continuation on the last line continues into nothing: Apache reads what is there.
    if let Some(last) = pending {
        lines.push(last);
    }
    lines
}

/// The directive's name and its unquoted arguments.
fn split_name(text: &str, line: usize) -> Result<(String, Vec<String>), ParseError> {
    let mut words = split_args(text, line)?.into_iter();
    let name = words.next().ok_or_else(|| ParseError {
        line,
        message: "a section with no name".to_string(),
    })?;
    Ok((name, words.collect()))
}

/// Whitespace-separated words; `"…"` and `'…'` keep spaces, and `\"` inside double quotes is a
/// quote (Apache's `ap_getword_conf`).
fn split_args(text: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    word.push(first);
                    chars.next();
                } else if c == first {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(ParseError {
                    line,
                    message: format!("unbalanced {first} quote"),
                });
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}
