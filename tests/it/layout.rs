//! The house as the code's own imports draw it: no circle between the top-level modules of
//! `src/`, every import goes down the layers README draws, and a tool is one module (nothing else
//! in `src/` names it). Reads the source as text; no database.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use agent_meter::tools;

/// The layers, top first: a module may use only modules on a lower line. `app` and `cli` run
/// everything; `http` serves; tools are jobs; billing reads the store; providers know no store
/// and no queue; the store knows no web; `money`, `telemetry` and `failpoint` know nothing.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["app"],
    &["http"],
    &["tools"],
    &["jobs"],
    &["billing"],
    &["store"],
    &["providers"],
    &["config", "vapi", "lifecycle"],
    &["money", "telemetry", "failpoint"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without comments and without its `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("https://...") follows a quote or a colon.
            Some(i) if i == 0 || line[..i].ends_with(char::is_whitespace) => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named after `crate::` (in paths and in `use crate::{a, b::c}` groups).
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let mut i = at + "crate::".len();
        if bytes.get(i) != Some(&b'{') {
            out.insert(ident(i));
            continue;
        }
        // A group: the names at depth 1, each after `{` or `,`.
        let (mut depth, mut expect) = (0, true);
        while i < bytes.len() {
            match bytes[i] {
                b'{' => {
                    depth += 1;
                    expect = depth == 1;
                }
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' if depth == 1 => expect = true,
                c if depth == 1 && expect && (c.is_ascii_alphabetic() || c == b'_') => {
                    let name = ident(i);
                    i += name.len() - 1;
                    out.insert(name);
                    expect = false;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out.retain(|m| m != "self" && !m.is_empty());
    out
}

/// Who uses whom among the top-level modules, with the files that do.
fn graph() -> BTreeMap<(String, String), Vec<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("below src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("name")
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for used in crate_uses(&code(&text)) {
            if used != top {
                edges
                    .entry((top.clone(), used))
                    .or_default()
                    .push(rel.display().to_string());
            }
        }
    }
    edges
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/{module} is in no layer: add it to LAYERS and README's map"))
}

#[test]
fn every_import_goes_down_the_layers_so_no_module_circles_back() {
    let mut wrong = Vec::new();
    for ((from, to), files) in graph() {
        if layer_of(&from) >= layer_of(&to) {
            wrong.push(format!("{from} -> {to} ({})", files.join(", ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that go up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_paths_groups_and_skips_comments() {
    let text = "use crate::{a::b, c, d::{e, f}};\nlet x = crate::g::h(); // crate::i\n\
                let u = \"https://crate::j\";\n/// [`crate::k`]\n";
    let used: Vec<String> = crate_uses(&code(text)).into_iter().collect();
    assert_eq!(used, ["a", "c", "d", "g", "j"]);
}

#[test]
fn the_top_of_src_holds_at_most_sixteen_entries_and_no_file_over_600_lines() {
    let entries = std::fs::read_dir(src()).expect("src").count();
    assert!(entries <= 16, "{entries} entries at the top of src/");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let lines = std::fs::read_to_string(&file)
            .expect("read")
            .lines()
            .count();
        assert!(lines <= 600, "{} has {lines} lines", file.display());
    }
}

/// Where a tool may be named: its own module, and its lines in the registry.
fn own_module(tool: &tools::ToolSpec, file: &Path) -> bool {
    let rel = file.strip_prefix(src()).expect("below src");
    let module = rel.with_extension("");
    let mut parts = module
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string());
    parts.next().as_deref() == Some("tools") && parts.next().as_deref() == Some(tool.module)
}

#[test]
fn a_tool_is_named_only_in_its_module_and_its_registry_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let registry = src().join("tools").join("mod.rs");
    let mut found = Vec::new();
    for tool in tools::registry() {
        let mut names: Vec<&str> = vec![tool.name, tool.metric, tool.queue];
        names.extend(tool.aliases);
        names.extend(tool.settings.iter().map(|s| s.name));
        names.sort_unstable();
        names.dedup();
        for file in files.iter().filter(|f| !own_module(tool, f)) {
            let text = std::fs::read_to_string(file).expect("read");
            for (n, line) in text.lines().enumerate() {
                let registry_line = *file == registry
                    && (line.contains("ToolSpec::of::<")
                        || line.trim_start().starts_with("pub mod "));
                for name in &names {
                    let named = line.match_indices(name).any(|(i, _)| {
                        let before = line[..i].chars().next_back();
                        let after = line[i + name.len()..].chars().next();
                        let word = |c: Option<char>| {
                            c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        };
                        !word(before) && !word(after)
                    });
                    if named && !registry_line {
                        found.push(format!("{}:{}: {name}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "tools named outside their module:\n{}",
        found.join("\n")
    );
}

#[test]
fn env_example_lists_every_tools_variables_as_the_registry_declares_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let text = std::fs::read_to_string(path).expect(".env.example");
    let block = tools::env_example();
    assert!(
        text.contains(&block),
        ".env.example's tool block differs from the registry's; paste `agent-meter tools env`:\n{block}"
    );
}
