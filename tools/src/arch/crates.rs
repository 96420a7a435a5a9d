//! Rules 1–4: what each kind of workspace crate may depend on.

use cargo_metadata::DependencyKind;

use super::{Crate, Dep, Kind, Rule, Violation, Workspace, relative};

/// Third-party crates an `*-api` crate may use: what a contract of traits, DTOs, errors and
/// events needs, and nothing that drags an implementation (storage, runtime, web) along.
const API_ALLOWED: &[&str] = &[
    "serde",
    "serde_json",
    "uuid",
    "async-trait",
    "thiserror",
    "time",
    "chrono",
    "utoipa",
];
/// Additionally allowed in an api crate's dev-dependencies: snapshots of the event contracts.
const API_DEV_ALLOWED: &[&str] = &["insta"];

/// Checks every dependency (normal, dev and build, on every target) of every workspace crate.
pub(crate) fn check(ws: &Workspace) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, krate) in ws.crates.iter().enumerate() {
        for dep in &krate.deps {
            // A crate's dev-dependency on itself (to turn on its own test feature) crosses no
            // boundary.
            let target = dep
                .workspace_crate
                .filter(|&i| i != index)
                .map(|i| &ws.crates[i]);
            let depends_on = |rule: Rule, target: &Crate| {
                let what = format!(
                    "{} `{}` depends on {} `{}`",
                    krate.kind.describe(),
                    krate.name,
                    target.kind.describe(),
                    target.name
                );
                Some((rule, what))
            };
            let problem = match (&krate.kind, target) {
                (Kind::App, _)
                | (Kind::Kernel | Kind::Module(_) | Kind::Tools | Kind::Other, None) => None,
                (Kind::Api(_), None) => {
                    api_third_party_problem(krate, dep).map(|why| (Rule::ApiCrateDependency, why))
                }
                (Kind::Module(_) | Kind::Api(_), Some(t)) if t.kind == Kind::Kernel => None,
                // Calls go through the callee's contract (and a module implements its own).
                (Kind::Module(_), Some(t)) if matches!(t.kind, Kind::Api(_)) => None,
                (Kind::Module(_), Some(t)) => depends_on(Rule::ModuleDependsOnModule, t),
                (Kind::Api(_), Some(t)) => depends_on(Rule::ApiCrateDependency, t),
                (Kind::Kernel, Some(t)) => depends_on(Rule::KernelDependsOnWorkspace, t),
                (Kind::Tools, Some(t)) if matches!(t.kind, Kind::Kernel | Kind::Api(_)) => None,
                (Kind::Tools | Kind::Other, Some(t)) if matches!(t.kind, Kind::Module(_)) => {
                    depends_on(Rule::OnlyAppDependsOnModules, t)
                }
                (Kind::Tools, Some(t)) => depends_on(Rule::ToolsDependency, t),
                (Kind::Other, Some(_)) => None,
            };
            if let Some((rule, what)) = problem {
                violations.push(Violation {
                    rule,
                    message: format!(
                        "`{} -> {}`: {what} ({})",
                        krate.name,
                        dep.name,
                        where_declared(ws, krate, dep)
                    ),
                });
            }
        }
    }
    violations
}

/// Why an api crate may not use third-party crate `dep`, or `None` when it may.
fn api_third_party_problem(krate: &Crate, dep: &Dep) -> Option<String> {
    let name = dep.name.as_str();
    let dev = dep.kind == DependencyKind::Development;
    if API_ALLOWED.contains(&name) || (dev && API_DEV_ALLOWED.contains(&name)) {
        return None;
    }
    if name == "reqwest" {
        // The HTTP client of the contract is opt-in, so that in-process users of the api crate
        // never compile an HTTP stack.
        let enables = |items: &Vec<String>| {
            items
                .iter()
                .any(|f| f == "dep:reqwest" || f == "reqwest" || f.starts_with("reqwest/"))
        };
        let by_client = krate.features.get("client").is_some_and(enables);
        let by_other = krate
            .features
            .iter()
            // `reqwest` is the implicit feature cargo makes for an optional dependency.
            .any(|(feature, items)| feature != "client" && feature != "reqwest" && enables(items));
        let client_by_default = krate
            .features
            .get("default")
            .is_some_and(|d| d.iter().any(|f| f == "client"));
        let ok = !dev && dep.optional && by_client && !by_other && !client_by_default;
        return (!ok).then(|| {
            "`reqwest` is allowed only as an optional dependency enabled by feature `client` \
             (and not by default)"
                .to_owned()
        });
    }
    Some(format!(
        "third-party crate `{name}` is not on the api allow-list{}",
        if dev { " for dev-dependencies" } else { "" }
    ))
}

/// `[dev-dependencies] in modules/orders/Cargo.toml`, for messages.
fn where_declared(ws: &Workspace, krate: &Crate, dep: &Dep) -> String {
    let table = match dep.kind {
        DependencyKind::Development => "dev-dependencies",
        DependencyKind::Build => "build-dependencies",
        _ => "dependencies",
    };
    let table = match &dep.platform {
        Some(platform) => format!("[target.'{platform}'.{table}]"),
        None => format!("[{table}]"),
    };
    format!("{table} in {}", relative(&ws.root, &krate.manifest))
}
