//! The module map of ARCHITECTURE.md, enforced: data flows one way (cluster + sources → engine → API
//! surfaces), and each module imports only what its row allows. A new `crate::x` reference that breaks
//! the map fails here with the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module → the crate modules it may use. `app`, `config` and `main` are the wiring.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: depend on nothing of the crate (error names TLS errors it wraps; the provider contract
    // uses its echo caps).
    ("provider", &["error"]),
    ("tls", &[]),
    ("duration", &[]),
    ("target", &[]),
    ("saturation", &["duration"]),
    ("telemetry", &[]),
    ("health", &[]),
    ("changes", &[]),
    ("error", &["tls"]),
    ("supervisor", &["error", "telemetry"]),
    // Following one ConfigMap: shared by cluster and auth, so it knows neither.
    ("follow", &["error", "health", "telemetry"]),
    // Accepting TLS connections, for both ports.
    ("conn", &["error", "telemetry"]),
    // Inputs. Sources read targets, never the cluster's snapshot; the cluster knows nothing of auth.
    ("auth", &["error", "follow", "telemetry", "tls"]),
    (
        "cluster",
        &[
            "changes",
            "error",
            "follow",
            "health",
            "provider",
            "saturation",
            "target",
            "telemetry",
        ],
    ),
    (
        "sources",
        &[
            "changes",
            "duration",
            "error",
            "health",
            "saturation",
            "target",
            "telemetry",
            "tls",
        ],
    ),
    ("standalone", &["cluster", "error", "health", "saturation"]),
    // The engine joins the inputs and implements the provider contract.
    (
        "engine",
        &[
            "cluster",
            "error",
            "health",
            "provider",
            "saturation",
            "sources",
            "target",
        ],
    ),
    // Consumers of the engine.
    (
        "status",
        &[
            "cluster",
            "engine",
            "error",
            "saturation",
            "sources",
            "telemetry",
        ],
    ),
    (
        "server",
        &[
            "auth",
            "conn",
            "error",
            "health",
            "provider",
            "telemetry",
            "tls",
        ],
    ),
    // KEDA's external scaler: another surface over the same provider contract.
    (
        "scaler",
        &["changes", "conn", "error", "provider", "telemetry", "tls"],
    ),
    // Wiring: flags, the commands, `serve`.
    (
        "config",
        &[
            "auth",
            "duration",
            "provider",
            "saturation",
            "server",
            "sources",
            "status",
            "telemetry",
            "tls",
        ],
    ),
    (
        "cli",
        &[
            "cluster", "config", "engine", "error", "server", "sources", "target", "tls",
        ],
    ),
    ("app", &["*"]),
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

/// `(line number, module)` for every `crate::module` reference outside comments, including each module
/// of a grouped import (`use crate::{a, b::C}`, over several lines too), at the line of its `crate::`.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    // Comments out, line breaks kept, so that positions map back to lines.
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        let after = at + "crate::".len();
        from = after;
        let rest = &code[after..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items, up to its closing brace.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        item.push(c);
                    }
                    '}' if depth == 0 => break,
                    '}' => {
                        depth -= 1;
                        item.push(c);
                    }
                    ',' if depth == 0 => {
                        let name = ident(&item);
                        if !name.is_empty() {
                            refs.push((line_of(at), name));
                        }
                        item.clear();
                    }
                    _ => item.push(c),
                }
            }
            let name = ident(&item);
            if !name.is_empty() {
                refs.push((line_of(at), name));
            }
            continue;
        }
        let name = ident(rest);
        if !name.is_empty() {
            refs.push((line_of(at), name));
        }
    }
    refs
}

/// The parser finds modules in grouped imports, on one line or several, and ignores comments: a
/// violation hidden in a group is found.
#[test]
fn grouped_imports_are_parsed() {
    let text = "use crate::{engine, tls::X};\n// use crate::status;\nuse crate::{\n    status::Y,\n    cluster::{a, b},\n};\nlet x = crate::health::f();\n";
    assert_eq!(
        crate_refs(text),
        vec![
            (1, "engine".to_string()),
            (1, "tls".to_string()),
            (3, "status".to_string()),
            (3, "cluster".to_string()),
            (7, "health".to_string()),
        ]
    );
}

#[test]
fn modules_import_only_what_the_map_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" || module == "bin" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module {module} is not in the map (tests/it/layering.rs and ARCHITECTURE.md)",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, used) in crate_refs(&text) {
            if used == module || may.contains(&"*") || may.contains(&used.as_str()) {
                continue;
            }
            violations.push(format!(
                "{}:{line}: {module} uses crate::{used}, which the map does not allow",
                rel.display()
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The HTTPS surface is used only by itself and the wiring (the `status` command reads its route).
#[test]
fn only_the_wiring_imports_the_server() {
    for (module, may) in ALLOWED {
        let wiring = matches!(*module, "app" | "config" | "cli");
        assert!(
            wiring || *module == "server" || !may.contains(&"server"),
            "{module} may not import crate::server"
        );
    }
    assert_eq!(
        crate_refs("use crate::server::routes; // crate::engine"),
        vec![(1, "server".to_string())]
    );
}
