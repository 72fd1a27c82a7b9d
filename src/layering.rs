//! The layer rule, checked on the source: dependencies point one way, from the edge to the
//! core (`docs/architecture.md`).
//!
//! - The wiring (`app`, `main`) may use everything.
//! - Routing (`routes`) may use the handlers and everything below, not the wiring.
//! - The handlers (`api`, `admin`, `console`, `delivery`), the transport (`server`) and the
//!   error table (`error`, which maps every error to its HTTP answer) may use the core, not
//!   routing or the wiring; the transport uses no handler either (it holds no business
//!   logic).
//! - The core (everything else: `state`, the use cases `accounts` and `render`, the stores,
//!   caches, pipeline, CPU pool, config, ...) uses none of the above.

use std::path::{Path, PathBuf};

const WIRING: &[&str] = &["app", "main", "lib", "layering"];
const ROUTING: &[&str] = &["routes"];
const HANDLERS: &[&str] = &["api", "admin", "console", "delivery", "server", "error"];
const TRANSPORT: &str = "server";

/// The top-level modules `module` must not import.
fn forbidden(module: &str) -> Vec<&'static str> {
    let upper: &[&[&str]] = if ROUTING.contains(&module) {
        &[WIRING]
    } else if module == TRANSPORT {
        &[WIRING, ROUTING, &["api", "admin", "console", "delivery"]]
    } else if HANDLERS.contains(&module) {
        &[WIRING, ROUTING]
    } else {
        &[WIRING, ROUTING, HANDLERS]
    };
    upper.iter().flat_map(|l| l.iter().copied()).collect()
}
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

/// The top-level module a file of `src/` belongs to (`src/cache/meta.rs` -> `cache`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The lines (from 1) of `text` that import from a module of `forbidden`: a path
/// `crate::<module>::...` or `crate::<module>;`, or a grouped import naming the module at its
/// top level (`use crate::{a, <module>::X};`, on one line or several). Comments are ignored.
fn wrong_imports(text: &str, forbidden: &[&str]) -> Vec<usize> {
    let code: Vec<&str> = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect();
    let mut wrong = Vec::new();
    for (n, line) in code.iter().enumerate() {
        for upper in forbidden {
            for path in [format!("crate::{upper}::"), format!("crate::{upper};")] {
                if line.contains(&path) {
                    wrong.push(n + 1);
                }
            }
        }
    }
    // Grouped imports: the first segment of each top-level item of every `crate::{...}`.
    let code = code.join("\n");
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::{") {
        let start = from + at + "crate::{".len();
        let (mut depth, mut item) = (1, start);
        for (i, c) in code[start..].char_indices() {
            let i = start + i;
            match c {
                '}' | ',' if depth == 1 => {
                    let text = &code[item..i];
                    let name = text.trim().split("::").next().unwrap_or_default();
                    let name = name.split_whitespace().next().unwrap_or_default();
                    if forbidden.contains(&name) {
                        let lead = text.len() - text.trim_start().len();
                        wrong.push(code[..item + lead].matches('\n').count() + 1);
                    }
                    item = i + 1;
                    if c == '}' {
                        break;
                    }
                }
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        from = start;
    }
    wrong.sort_unstable();
    wrong.dedup();
    wrong
}

#[test]
fn grouped_imports_are_checked_too() {
    let text = "\
use crate::{app, store};
use crate::{
    cache::Caches,
    routes::{PublicHandler, public_route},
};
use crate::store::{Store, app};
use crate::app::build;
// use crate::{app};
use crate::{cache, config::{self, Config}};
";
    assert_eq!(wrong_imports(text, &["app", "routes"]), vec![1, 4, 7]);
}

#[test]
fn dependencies_point_from_the_edge_to_the_core() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 40, "found only {} files", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if WIRING.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for n in wrong_imports(&text, &forbidden(&module)) {
            wrong.push(format!("{}:{}: {}", file.display(), n, lines[n - 1].trim()));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// The backticked names in the second column of the layer table's row starting `| {layer}`.
fn documented(doc: &str, layer: &str) -> Vec<String> {
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| {layer} |")))
        .unwrap_or_else(|| panic!("docs/architecture.md has no `{layer}` row"));
    let modules = row.split('|').nth(2).unwrap_or_default();
    modules
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| !name.contains(' ') && !name.contains('('))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_architecture_document_names_the_layers_this_test_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let names = |list: &[&str]| sorted(list.iter().map(|s| s.to_string()).collect());
    assert_eq!(sorted(documented(&doc, "Wiring")), names(&["app", "main"]));
    assert_eq!(sorted(documented(&doc, "Routing")), names(ROUTING));
    let mut handlers = documented(&doc, "Handlers");
    handlers.extend(documented(&doc, "Transport and error table"));
    assert_eq!(sorted(handlers), names(HANDLERS));
    // Every top-level module is placed in some layer.
    let mut placed: Vec<String> = ["Wiring", "Routing", "Handlers", "Transport and error table"]
        .iter()
        .chain(&["Use cases", "Core"])
        .flat_map(|layer| documented(&doc, layer))
        .collect();
    // `src/build.rs` is Cargo's build script (the libjxl bindings), not a module of the crate.
    placed.extend(["lib", "layering", "build"].map(String::from));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut missing: Vec<String> = files
        .iter()
        .map(|f| module_of(&root.join("src"), f))
        .filter(|m| !placed.contains(m))
        .collect();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules missing from docs/architecture.md's layer table: {missing:?}"
    );
}
