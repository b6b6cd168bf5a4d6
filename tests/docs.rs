//! The man pages and README must keep up with the binaries' `--help`.

use std::process::Command;

/// Every flag (`--long` and `-s`) that `--help` lists for `binary`.
fn flags_in_help(binary: &str) -> Vec<String> {
    let output = Command::new(binary)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let mut flags = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split_whitespace() {
            let word = word.trim_end_matches([',', '.']);
            let word = word.split('=').next().unwrap_or(word);
            if word.starts_with("--") || (word.starts_with('-') && word.len() == 2) {
                flags.push(word.to_string());
            }
        }
    }
    assert!(flags.len() > 3, "could not parse --help:\n{help}");
    flags
}

/// Asserts the man page documents every flag of `--help` (in roff, `-` is
/// written `\-`).
fn man_page_covers_help(binary: &str, man_page: &str) {
    let man = std::fs::read_to_string(man_page).expect("read man page");
    let missing: Vec<String> = flags_in_help(binary)
        .into_iter()
        .filter(|flag| !man.contains(&flag.replace('-', "\\-")))
        .collect();
    assert!(
        missing.is_empty(),
        "{man_page} does not document {missing:?}"
    );
}

#[test]
fn chat_server_man_page_documents_every_option() {
    man_page_covers_help(env!("CARGO_BIN_EXE_chat-server"), "man/chat-server.1");
}

#[test]
fn chat_server_man_page_has_the_required_sections() {
    let man = std::fs::read_to_string("man/chat-server.1").unwrap();
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "CONSOLE COMMANDS",
        "SIGNALS",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            man.contains(&format!(".SH {section}\n")),
            "missing section {section}"
        );
    }
}

#[test]
fn readme_documents_every_server_option() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let missing: Vec<String> = flags_in_help(env!("CARGO_BIN_EXE_chat-server"))
        .into_iter()
        .filter(|flag| !readme.contains(flag.as_str()))
        .collect();
    assert!(missing.is_empty(), "README.md does not mention {missing:?}");
}

#[test]
fn chat_client_man_page_documents_every_option() {
    man_page_covers_help(env!("CARGO_BIN_EXE_chat-client"), "man/chat-client.1");
}

#[test]
fn chat_client_man_page_has_the_required_sections() {
    let man = std::fs::read_to_string("man/chat-client.1").unwrap();
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "INTERACTIVE USE",
        "BATCH USE",
        "OUTPUT",
        "EXIT STATUS",
        "EXAMPLES",
    ] {
        assert!(
            man.contains(&format!(".SH {section}\n")),
            "missing section {section}"
        );
    }
}

#[test]
fn readme_documents_every_client_option() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let missing: Vec<String> = flags_in_help(env!("CARGO_BIN_EXE_chat-client"))
        .into_iter()
        .filter(|flag| !readme.contains(flag.as_str()))
        .collect();
    assert!(missing.is_empty(), "README.md does not mention {missing:?}");
}

/// The modules a `//! # Layout` map in `lib.rs` names: the first
/// backquoted word of each bullet.
fn layout_map(lib_rs: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_layout = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            in_layout = doc == "# Layout";
            continue;
        }
        if !in_layout || !doc.starts_with("- ") {
            continue;
        }
        let name = doc.split('`').nth(1).expect("a bullet names its module");
        names.push(name.to_string());
    }
    names
}

/// The top-level modules of `src/`: its `.rs` files and folders, without
/// `lib.rs` and the binaries.
fn top_level_modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("src")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            let module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            (module && name != "lib" && name != "bin").then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_layout_map_in_lib_rs_names_every_module_and_only_those() {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    let mut mapped = layout_map(&lib);
    mapped.sort();
    eqnice_vec(top_level_modules(), mapped);
}

fn eqnice_vec(tree: Vec<String>, map: Vec<String>) {
    let missing: Vec<_> = tree.iter().filter(|m| !map.contains(m)).collect();
    let stale: Vec<_> = map.iter().filter(|m| !tree.contains(m)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "not in the map: {missing:?}; in the map but not in src/: {stale:?}"
    );
}

#[test]
fn every_path_the_design_map_names_exists() {
    let design = std::fs::read_to_string("docs/design.md").unwrap();
    let mut checked = 0;
    for word in design.split(|c: char| c.is_whitespace() || "`(),;".contains(c)) {
        if !(word.starts_with("src/") || word.starts_with("tests/")) {
            continue;
        }
        assert!(
            std::path::Path::new(word).exists(),
            "docs/design.md names {word}, which does not exist"
        );
        checked += 1;
    }
    assert!(checked > 10, "found only {checked} paths in docs/design.md");
    // And it maps every top-level module.
    for module in top_level_modules() {
        assert!(
            design.contains(&format!("src/{module}")),
            "docs/design.md does not map src/{module}"
        );
    }
}

#[test]
fn the_protocol_document_lists_every_refusal_code() {
    let protocol = std::fs::read_to_string("docs/protocol.md").unwrap();
    for code in pmchat::wire::texts::Code::all() {
        assert!(
            protocol.contains(&format!("| `{}` |", code.as_str())),
            "docs/protocol.md does not list the code {}",
            code.as_str()
        );
    }
}

#[test]
fn both_programs_print_completion_scripts_for_bash_zsh_and_fish() {
    for (binary, option) in [
        (env!("CARGO_BIN_EXE_chat-server"), "cluster-wait"),
        (env!("CARGO_BIN_EXE_chat-client"), "until-caught-up"),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(binary)
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(out.status.success(), "{binary} completions {shell}");
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(option), "{binary} {shell}: no {option}");
        }
        let unknown = Command::new(binary)
            .args(["completions", "tcsh"])
            .output()
            .unwrap();
        assert_eq!(unknown.status.code(), Some(2), "a usage error");
    }
}
