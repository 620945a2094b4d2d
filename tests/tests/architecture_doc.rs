//! ARCHITECTURE.md stays true to the tree: every Rust source file of every crate is named in the file
//! map of its crate's section (a directory as `dir/`, its files by name), so a new module cannot land
//! undocumented.

use std::path::{Path, PathBuf};

use coldfuse_e2e::repo_root;

/// The source roots; each has a `## ... (`root`)` section in ARCHITECTURE.md with a file map.
const CRATES: [&str; 5] = [
    "shared/src",
    "coordinator/src",
    "contributor/src",
    "contributor/cli/src",
    "contributor/lab/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first code block after the `##` heading that names `(`root`)`.
fn file_map<'a>(doc: &'a str, root: &str) -> &'a str {
    let heading = format!("(`{root}`)");
    let start = doc
        .lines()
        .position(|l| l.starts_with("## ") && l.contains(&heading))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no `## ... {heading}` section"));
    let rest: usize = doc.lines().take(start).map(|l| l.len() + 1).sum();
    let section = &doc[rest..];
    let open = section.find("\n```\n").expect("a file map") + 5;
    let close = open + section[open..].find("\n```").expect("a closed file map");
    &section[open..close]
}

/// Whether `name` occurs in `text` as a whole word (not inside a longer name or path).
fn names(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && before != Some('.') && boundary(after)
    })
}

#[test]
fn the_architecture_file_maps_list_every_source_file() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for krate in CRATES {
        let map = file_map(&doc, krate);
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        assert!(!files.is_empty(), "{krate} has no sources");
        for file in files {
            let rel = file.strip_prefix(root.join(krate)).unwrap();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let (name, dirs) = parts.split_last().unwrap();
            let mut wanted: Vec<String> = dirs.iter().map(|d| format!("{d}/")).collect();
            // A directory's `mod.rs` is documented by the directory's own entry.
            if name != "mod.rs" {
                wanted.push(name.clone());
            }
            for w in wanted {
                if !names(map, &w) {
                    missing.push(format!("{krate}/{} (no `{w}`)", rel.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's file maps do not name:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn names_match_whole_words_only() {
    assert!(names("  replay.rs  the replay", "replay.rs"));
    assert!(!names("server_replay.rs", "replay.rs"));
    assert!(names("edge/   mod.rs", "edge/"));
    assert!(!names("knowledge/", "edge/"));
}
