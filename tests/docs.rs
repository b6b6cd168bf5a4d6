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
