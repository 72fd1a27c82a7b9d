//! The layer rule, checked on the source: dependencies point one way, from the edge to the
//! core. The wiring (`app`, `main`) may use everything; the handlers (`api`, `admin`,
//! `delivery`, `server`, and `error`, which maps every error to its HTTP answer) may use the
//! core but not the wiring; the core (everything else: `state`, the stores, caches, pipeline,
//! CPU pool, config, ...) uses neither.

use std::path::{Path, PathBuf};

const WIRING: &[&str] = &["app", "main", "lib", "layering"];
const HANDLERS: &[&str] = &["api", "admin", "delivery", "server", "error"];
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
        let forbidden: Vec<&str> = if HANDLERS.contains(&module.as_str()) {
            WIRING.to_vec()
        } else {
            WIRING.iter().chain(HANDLERS).copied().collect()
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for upper in &forbidden {
                for path in [format!("crate::{upper}::"), format!("crate::{upper};")] {
                    if code.contains(&path) {
                        wrong.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}
