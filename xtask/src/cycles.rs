//! `cargo xtask cycles`: the module dependency cycles of `balancer-user`'s library, read from
//! the source (no compiler): every `use` tree and every `crate::`/`super::`/`self::` path,
//! resolved to the module it names. Two views: cycles between top-level modules
//! (`crate::admin` <-> `crate::proxy`), and cycles between siblings inside one top-level module
//! (`dataplane::control` <-> `dataplane::loader`). A parent's `mod.rs` and its children use each
//! other by design, so edges to or from the parent itself are left out of the second view.
//! Test code (`#[cfg(test)] mod tests`, inline or in its own file) is not counted. Any cycle
//! fails the command, and `cargo xtask test` runs it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// A module path below the crate root: `["proxy", "h1", "server"]`.
type ModPath = Vec<String>;

/// Where an edge was seen: file (relative to `src/`) and line.
type Sites = BTreeSet<(String, usize)>;

pub fn run(src: &Path) -> anyhow::Result<()> {
    let files = module_files(src)?;
    let modules: BTreeSet<ModPath> = files.iter().map(|(module, _)| module.clone()).collect();
    let mut edges: Vec<(ModPath, ModPath, String, usize)> = Vec::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let relative = path.strip_prefix(src).unwrap_or(path).display().to_string();
        for (line, target) in references(module, &text, &modules) {
            edges.push((module.clone(), target, relative.clone(), line));
        }
    }
    let report = report(&edges);
    print!("{report}");
    // A cycle is a failure, so `cargo xtask test` keeps the graph acyclic.
    anyhow::ensure!(
        report.matches("  none\n").count() == 2,
        "the module graph has cycles (above): break them before landing"
    );
    Ok(())
}

/// The report: each view's strongly connected components, each edge inside one with its sites.
fn report(edges: &[(ModPath, ModPath, String, usize)]) -> String {
    let mut out = String::new();
    let top: Vec<_> = edges
        .iter()
        .filter(|(from, to, ..)| !from.is_empty() && !to.is_empty() && from[0] != to[0])
        .map(|(from, to, file, line)| (from[0].clone(), to[0].clone(), file, *line))
        .collect();
    out.push_str("top-level module cycles (crate::a <-> crate::b):\n");
    write_cycles(&mut out, &top);

    out.push_str("\nsecond-level module cycles (siblings inside one top-level module):\n");
    let siblings: Vec<_> = edges
        .iter()
        .filter(|(from, to, ..)| {
            from.len() >= 2 && to.len() >= 2 && from[0] == to[0] && from[1] != to[1]
        })
        .map(|(from, to, file, line)| (from[..2].join("::"), to[..2].join("::"), file, *line))
        .collect();
    write_cycles(&mut out, &siblings);
    out
}

fn write_cycles(out: &mut String, edges: &[(String, String, &String, usize)]) {
    let mut graph: BTreeMap<String, BTreeMap<String, Sites>> = BTreeMap::new();
    for (from, to, file, line) in edges {
        graph
            .entry(from.clone())
            .or_default()
            .entry(to.clone())
            .or_default()
            .insert(((*file).clone(), *line));
        graph.entry(to.clone()).or_default();
    }
    let components: Vec<BTreeSet<String>> = strongly_connected(&graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .collect();
    if components.is_empty() {
        out.push_str("  none\n");
    }
    for component in components {
        let names: Vec<&str> = component.iter().map(String::as_str).collect();
        let _ = writeln!(out, "  {{{}}}", names.join(", "));
        for from in &component {
            for (to, sites) in &graph[from] {
                if !component.contains(to) {
                    continue;
                }
                let shown: Vec<String> = sites
                    .iter()
                    .take(4)
                    .map(|(file, line)| format!("{file}:{line}"))
                    .collect();
                let more = if sites.len() > 4 {
                    format!(" (+{} more)", sites.len() - 4)
                } else {
                    String::new()
                };
                let _ = writeln!(out, "    {from} -> {to}: {}{more}", shown.join(", "));
            }
        }
    }
}

/// Tarjan's algorithm over a small graph (recursive: module graphs are shallow).
fn strongly_connected(graph: &BTreeMap<String, BTreeMap<String, Sites>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, Sites>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for to in state.graph[node].keys() {
            let to = to.as_str();
            if !state.index.contains_key(to) {
                visit(state, to);
                let low = state.low[node].min(state.low[to]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.low[node].min(state.index[to]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.insert(member.to_string());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.components.sort();
    state.components
}

/// Every `.rs` file of the library with its module path (`lib.rs` is the root, `main.rs` is the
/// binary and left out; test modules are left out).
fn module_files(src: &Path) -> anyhow::Result<Vec<(ModPath, PathBuf)>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut module: ModPath = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["main"] || module.iter().any(|part| part == "tests") {
                continue;
            }
            if module == ["lib"] {
                module.clear();
            }
            files.push((module, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The modules `text` (the file of `module`) refers to, with the line of each reference.
fn references(module: &ModPath, text: &str, modules: &BTreeSet<ModPath>) -> Vec<(usize, ModPath)> {
    let code = strip(text);
    let mut found = Vec::new();
    let tokens = tokenize(&code);
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = tokens[i];
        if token == "use" {
            let end = tokens[i..]
                .iter()
                .position(|(_, t)| *t == ";")
                .map_or(tokens.len(), |n| i + n);
            let mut paths = Vec::new();
            let mut at = i + 1;
            use_tree(&tokens[..end], &mut at, &mut Vec::new(), &mut paths);
            for (line, path) in paths {
                if let Some(target) = resolve(module, &path, modules) {
                    found.push((line, target));
                }
            }
            i = end;
            continue;
        }
        if matches!(token, "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|(_, t)| *t == "::")
        {
            let mut path = vec![token.to_string()];
            let mut at = i + 1;
            while tokens.get(at).is_some_and(|(_, t)| *t == "::")
                && tokens.get(at + 1).is_some_and(|(_, t)| is_ident(t))
            {
                path.push(tokens[at + 1].1.to_string());
                at += 2;
            }
            if let Some(target) = resolve(module, &path, modules) {
                found.push((line, target));
            }
            i = at;
            continue;
        }
        i += 1;
    }
    found.retain(|(_, target)| target != module);
    found
}

/// The file without comments, string literals, and inline `#[cfg(test)] mod … { … }` blocks
/// (line breaks kept, so lines still count).
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping: Option<i64> = None;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let code = without_comment(line);
        if let Some(depth) = skipping.as_mut() {
            *depth += brace_balance(&code);
            out.push('\n');
            if *depth <= 0 {
                skipping = None;
            }
            continue;
        }
        let trimmed = code.trim();
        if trimmed == "#[cfg(test)]" {
            pending_cfg_test = true;
        } else if pending_cfg_test && trimmed.contains("mod ") && trimmed.ends_with('{') {
            pending_cfg_test = false;
            let depth = brace_balance(&code);
            if depth > 0 {
                skipping = Some(depth);
            }
            out.push('\n');
            continue;
        } else if !trimmed.starts_with("#[") {
            pending_cfg_test = false;
        }
        out.push_str(&code);
        out.push('\n');
    }
    out
}

/// A line without its `//` comment and with string literals blanked (a lexer's view of one
/// line; raw and multi-line strings are rare enough in `use`-bearing code to ignore).
fn without_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push('"');
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

fn brace_balance(code: &str) -> i64 {
    code.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

/// Identifiers and the punctuation a `use` tree needs, each with its 1-based line.
fn tokenize(code: &str) -> Vec<(usize, &str)> {
    let mut tokens = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_alphanumeric() || c == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push((number + 1, &line[start..i]));
                continue;
            }
            if line[i..].starts_with("::") {
                tokens.push((number + 1, "::"));
                i += 2;
                continue;
            }
            if matches!(c, b'{' | b'}' | b',' | b';' | b'*') {
                tokens.push((number + 1, &line[i..=i]));
            }
            i += 1;
        }
    }
    tokens
}

fn is_ident(token: &str) -> bool {
    token
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
}

/// Expands one `use` tree starting at `tokens[*at]` into its paths, each with the line of its
/// last name.
fn use_tree(
    tokens: &[(usize, &str)],
    at: &mut usize,
    prefix: &mut ModPath,
    out: &mut Vec<(usize, ModPath)>,
) {
    let depth = prefix.len();
    loop {
        match tokens.get(*at).map(|(_, t)| *t) {
            Some("{") => {
                *at += 1;
                loop {
                    match tokens.get(*at).map(|(_, t)| *t) {
                        None => break,
                        Some("}") => {
                            *at += 1;
                            break;
                        }
                        Some(",") => *at += 1,
                        Some(_) => use_tree(tokens, at, prefix, out),
                    }
                }
                break;
            }
            Some("*") => {
                out.push((tokens[*at].0, prefix.clone()));
                *at += 1;
                break;
            }
            Some(token) if is_ident(token) => {
                let line = tokens[*at].0;
                prefix.push(token.to_string());
                *at += 1;
                if tokens.get(*at).is_some_and(|(_, t)| *t == "::") {
                    *at += 1;
                    continue;
                }
                if tokens.get(*at).is_some_and(|(_, t)| *t == "as") {
                    *at += 2;
                }
                if prefix.last().is_some_and(|last| last == "self") {
                    prefix.pop();
                }
                out.push((line, prefix.clone()));
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(depth);
}

/// The module a path in `module` names: the longest prefix that is a module of the crate.
/// `None` for other crates' paths and the crate root itself.
fn resolve(module: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut absolute: ModPath = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("self") => module.iter().chain(&path[1..]).cloned().collect(),
        Some("super") => {
            let mut base = module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|p| p == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.into_iter().chain(rest.iter().cloned()).collect()
        }
        // A child module named relative to this one (`use state::ProxyState` in `mod.rs`).
        Some(first) => {
            let mut child = module.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            module.iter().chain(path).cloned().collect()
        }
        None => return None,
    };
    while !absolute.is_empty() && !modules.contains(&absolute) {
        absolute.pop();
    }
    (!absolute.is_empty()).then_some(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(names: &[&str]) -> BTreeSet<ModPath> {
        names
            .iter()
            .map(|name| name.split("::").map(str::to_string).collect())
            .collect()
    }

    fn path(name: &str) -> ModPath {
        name.split("::").map(str::to_string).collect()
    }

    #[test]
    fn use_trees_inline_paths_and_super_resolve_to_modules() {
        let modules = modules(&["a", "a::b", "a::c", "d", "d::e"]);
        let text = "use crate::d::{e::Thing, self};\nuse super::c::X as Y;\n\
                    fn f() { crate::d::e::g(); } // crate::a::c in a comment\n\
                    #[cfg(test)]\nmod tests {\n    use crate::d::e;\n}\n";
        let found: Vec<(usize, String)> = references(&path("a::b"), text, &modules)
            .into_iter()
            .map(|(line, target)| (line, target.join("::")))
            .collect();
        assert_eq!(
            found,
            [
                (1, "d::e".to_string()),
                (1, "d".to_string()),
                (2, "a::c".to_string()),
                (3, "d::e".to_string()),
            ],
            "each reference resolves to the module it names; comments and tests do not count"
        );
    }

    #[test]
    fn report_shows_only_cycles() {
        let edge = |from: &str, to: &str| (path(from), path(to), "x.rs".to_string(), 1);
        let text = report(&[
            edge("a::b", "c"),
            edge("c", "a"),
            edge("a::b", "a::c"),
            edge("a::c", "a::b"),
            edge("a", "a::b"),
            edge("d", "c"),
        ]);
        assert_eq!(
            text,
            "top-level module cycles (crate::a <-> crate::b):\n  {a, c}\n    a -> c: x.rs:1\n    \
             c -> a: x.rs:1\n\nsecond-level module cycles (siblings inside one top-level \
             module):\n  {a::b, a::c}\n    a::b -> a::c: x.rs:1\n    a::c -> a::b: x.rs:1\n",
            "a cycle lists its members and the edges inside it, nothing else"
        );
    }
}
