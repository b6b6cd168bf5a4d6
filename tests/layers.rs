//! The layers stay layers: no two files of `src/` import each other in a
//! loop, no module imports one above it, and no file grows past 700 lines.
//!
//! A rough reader of Rust, like the one in the developers' tools: every
//! `crate::…`, `super::…` and `self::…` path (`use` groups included) is
//! resolved to the file of the longest module it names. No macro
//! expansion; unit-test modules (`#[cfg(test)] mod tests { … }` to the
//! end of a file) are not layers and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a top-level module of `src/` sits: a module may import one of a
/// lower rank, or one of its own rank among the shared pieces (ranks 0
/// and 1), and never one above it. The server and the client do not
/// import each other.
fn rank(top: &str) -> u8 {
    match top {
        // The wire and the pure text helpers it uses.
        "wire" | "hex" | "sanitize" | "json" => 0,
        "server" | "client" => 2,
        "bench" => 3,
        _ => 1,
    }
}

/// Every `.rs` file under `src/` but the binaries, by module path.
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![PathBuf::from("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path != Path::new("src/bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix("src").unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            found.insert(parts, path);
        }
    }
    found
}

/// The source without comments and without a trailing unit-test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut code = String::new();
    for line in text.lines() {
        let line = match line.find("//") {
            // A `//` inside a string (a URL) cuts a line short: at worst a
            // path on the rest of it goes unseen.
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    let mut search = 0;
    while let Some(at) = code[search..].find("#[cfg(test)]") {
        let at = search + at;
        let rest = code[at + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests {") {
            code.truncate(at);
            break;
        }
        search = at + 1;
    }
    code
}

/// Reads `ident` or `{…}` groups after a `::`, adding every full path.
fn paths_after(code: &[u8], mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let ident = |at: usize| {
        let end = (at..code.len())
            .find(|&i| !(code[i].is_ascii_alphanumeric() || code[i] == b'_'))
            .unwrap_or(code.len());
        (String::from_utf8_lossy(&code[at..end]).into_owned(), end)
    };
    let mut path = prefix;
    loop {
        if !code[at..].starts_with(b"::") {
            out.push(path);
            return;
        }
        at += 2;
        while code.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if code.get(at) == Some(&b'{') {
            // A group: each comma-separated item is a path of its own.
            let mut depth = 0;
            let mut start = at + 1;
            for i in at..code.len() {
                match code[i] {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        let item = String::from_utf8_lossy(&code[start..i]).into_owned();
                        let item = item.split(" as ").next().unwrap_or("").trim().to_string();
                        if !item.is_empty() && item != "self" && item != "*" {
                            let mut nested = format!("x::{item}").into_bytes();
                            nested.push(b';');
                            let mut items = Vec::new();
                            paths_after(&nested, 1, path.clone(), &mut items);
                            out.extend(items);
                        } else if item == "self" {
                            out.push(path.clone());
                        }
                        start = i + 1;
                        if code[i] == b'}' {
                            return;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let (name, end) = ident(at);
        if name.is_empty() {
            out.push(path);
            return;
        }
        path.push(name);
        at = end;
    }
}

/// Every module path `file` (the module `here`) names.
fn references(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for kind in ["crate", "super", "self"] {
        let mut search = 0;
        while let Some(at) = code[search..].find(kind) {
            let at = search + at;
            search = at + kind.len();
            let before = at.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            // A path goes on with `::`; `pub(super)` and `&self` are no
            // imports.
            if !code[search..].starts_with("::") {
                continue;
            }
            let base = match kind {
                "crate" => Vec::new(),
                "super" => here[..here.len().saturating_sub(1)].to_vec(),
                _ => here.to_vec(),
            };
            paths_after(bytes, at + kind.len(), base, &mut found);
        }
    }
    found
}

/// File → files it imports, with one name that ties them.
fn import_graph() -> BTreeMap<PathBuf, BTreeMap<PathBuf, String>> {
    let modules = modules();
    let resolve = |path: &[String]| (0..=path.len()).rev().find_map(|k| modules.get(&path[..k]));
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let edges: &mut BTreeMap<PathBuf, String> = graph.entry(file.clone()).or_default();
        for path in references(&code_of(file), module) {
            if let Some(target) = resolve(&path) {
                if target != file {
                    let name = path.last().cloned().unwrap_or_default();
                    edges.entry(target.clone()).or_insert(name);
                }
            }
        }
    }
    graph
}

/// A loop of imports, if there is one.
fn find_circle(graph: &BTreeMap<PathBuf, BTreeMap<PathBuf, String>>) -> Option<Vec<PathBuf>> {
    fn visit(
        file: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeMap<PathBuf, String>>,
        done: &mut BTreeSet<PathBuf>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = stack.iter().position(|f| f == file) {
            let mut circle = stack[at..].to_vec();
            circle.push(file.clone());
            return Some(circle);
        }
        if done.contains(file) {
            return None;
        }
        stack.push(file.clone());
        for next in graph.get(file).into_iter().flat_map(BTreeMap::keys) {
            if let Some(circle) = visit(next, graph, done, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(file.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|file| visit(file, graph, &mut done, &mut Vec::new()))
}

fn top_of(file: &Path) -> String {
    let relative = file.strip_prefix("src").unwrap();
    let first = relative.components().next().unwrap();
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_two_files_import_each_other_in_a_loop() {
    let graph = import_graph();
    assert!(graph.len() > 50, "read only {} files", graph.len());
    if let Some(circle) = find_circle(&graph) {
        let steps: Vec<String> = circle
            .windows(2)
            .map(|pair| {
                let name = &graph[&pair[0]][&pair[1]];
                format!("{} -> {} ({name})", pair[0].display(), pair[1].display())
            })
            .collect();
        panic!("an import circle:\n  {}", steps.join("\n  "));
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let mut wrong = Vec::new();
    for (file, edges) in import_graph() {
        let from = top_of(&file);
        for (target, name) in edges {
            let to = top_of(&target);
            let allowed = from == to
                || rank(&to) < rank(&from)
                || (rank(&to) == rank(&from) && rank(&to) <= 1);
            if !allowed {
                wrong.push(format!(
                    "{} -> {} ({name})",
                    file.display(),
                    target.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports from below:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_source_file_is_over_700_lines() {
    let long: Vec<String> = modules()
        .values()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (lines > 700).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by concern: {long:?}");
}

#[test]
fn the_reader_sees_groups_nested_paths_and_the_parent() {
    let here = vec!["server".to_string(), "session".to_string()];
    let code =
        "use super::{auth::Proven, wire::{self, Wire}};\nlet x = crate::wire::v1::encode(1);";
    let mut found = references(code, &here);
    found.sort();
    let expect: Vec<Vec<String>> = [
        &["server", "auth", "Proven"][..],
        &["server", "wire"],
        &["server", "wire", "Wire"],
        &["wire", "v1", "encode"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(expect, found);
}
