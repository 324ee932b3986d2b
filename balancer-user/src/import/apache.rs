//! `balancer import apache`: the mod_proxy / mod_proxy_balancer part of an Apache httpd config,
//! parsed into its directives and sections (`parse`), then translated into a balancer config
//! (`translate`). Whatever has no equivalent becomes a comment naming the directive and its line.

mod parse;
mod translate;

#[cfg(test)]
mod tests;

pub use parse::{Directive, ParseError, parse};
pub use translate::translate;

/// Parses `text` (an Apache config) and translates it. `source` names the file in the output's
/// first comment; relative certificate paths are joined to `base_dir`, the Apache file's
/// directory (Apache itself would read them from `ServerRoot`, which an extract of a config
/// does not carry).
pub fn import(text: &str, source: &str, base_dir: &std::path::Path) -> Result<String, ParseError> {
    Ok(translate(&parse(text)?, source, base_dir))
}
