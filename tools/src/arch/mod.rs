//! The architecture lint: the invariants of BRIEF §2, checked on a workspace checkout.
//!
//! The crate graph comes from `cargo metadata --no-deps`; each workspace crate's kind is given
//! by where it lives (`modules/<m>` is module `<m>`, `modules/<m>/api` its contract,
//! `shared-kernel`, `app`). Rules 1–4 are checked over every dependency of every crate (normal,
//! dev and build: a test-only shortcut across a boundary is still a shortcut), rule 5 statically
//! over each module's SQL (see `tables`). The same code runs as `bounded arch check` and inside
//! `cargo test`, where it is also shown failing on injected violations.

mod crates;
mod sql;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use anyhow::Context as _;
use cargo_metadata::{DependencyKind, MetadataCommand};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ArchCommand {
    /// Check the workspace against the architecture invariants; exit 1 naming each violation.
    Check(WorkspaceArg),
    /// Print the module graph (call and event edges) as Mermaid.
    Graph(WorkspaceArg),
}

#[derive(Debug, Args)]
pub struct WorkspaceArg {
    /// Root of the workspace (or any folder below it).
    #[arg(long, env = "BOUNDED_WORKSPACE", default_value = ".")]
    pub workspace: PathBuf,
}

/// Runs `bounded arch check` or `bounded arch graph`: prints the outcome and gives the exit
/// code (1 naming each violation, 2 when the lint cannot run).
pub fn run(command: ArchCommand) -> ExitCode {
    let (workspace, graph_only) = match command {
        ArchCommand::Check(arg) => (arg.workspace, false),
        ArchCommand::Graph(arg) => (arg.workspace, true),
    };
    let report = match check(&workspace) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: the architecture lint could not run: {error:#}");
            return ExitCode::from(2);
        }
    };
    if graph_only {
        println!("{}", report.graph.mermaid());
        return ExitCode::SUCCESS;
    }
    if report.is_clean() {
        println!("architecture check passed: no violations");
        ExitCode::SUCCESS
    } else {
        for violation in &report.violations {
            eprintln!("{violation}");
        }
        eprintln!(
            "architecture check failed: {} violation(s)",
            report.violations.len()
        );
        ExitCode::FAILURE
    }
}

/// Checks the workspace at `workspace_root`.
///
/// # Errors
/// Only when the lint cannot run: no `Cargo.toml`, `cargo metadata` fails, a file cannot be
/// read. Violations are part of the [`Report`], not errors.
pub fn check(workspace_root: &Path) -> anyhow::Result<Report> {
    let ws = Workspace::load(workspace_root)?;
    let mut violations = crates::check(&ws);
    violations.extend(tables::check(&ws)?);
    // Stable: within a rule, violations stay in crate, file and line order.
    violations.sort_by_key(|v| v.rule);
    let graph = ModuleGraph::of(&ws);
    Ok(Report { violations, graph })
}

/// The outcome of [`check`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Every broken invariant, by rule, then crate, file and line; empty when clean.
    pub violations: Vec<Violation>,
    /// Who calls whom and who listens to whom, for `bounded arch graph` and the docs.
    pub graph: ModuleGraph,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// Names the offending edge (`` `orders -> inventory` ``) or table, and the file.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; {}",
            self.rule.id(),
            self.message,
            self.rule.statement()
        )
    }
}

/// The invariants of BRIEF §2 that the lint checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// 1: a module crate depends on no other module crate and not on `app`.
    ModuleDependsOnModule,
    /// 2: an `*-api` crate depends only on `shared-kernel` and allow-listed third-party crates.
    ApiCrateDependency,
    /// 3: `shared-kernel` depends on no workspace crate.
    KernelDependsOnWorkspace,
    /// 4: only `app` depends on module implementation crates.
    OnlyAppDependsOnModules,
    /// 4: `tools` depends only on `shared-kernel` and `*-api` crates of the workspace.
    ToolsDependency,
    /// 5: a module's SQL touches only tables created by its own migrations.
    SqlTableOwnership,
    /// 5: a module embeds only its own migrations directory.
    OwnMigrations,
}

impl Rule {
    /// The stable short id, e.g. `rule 1 (module-depends-on-module)`.
    pub fn id(self) -> &'static str {
        match self {
            Rule::ModuleDependsOnModule => "rule 1 (module-depends-on-module)",
            Rule::ApiCrateDependency => "rule 2 (api-crate-dependency)",
            Rule::KernelDependsOnWorkspace => "rule 3 (kernel-depends-on-workspace)",
            Rule::OnlyAppDependsOnModules => "rule 4 (only-app-depends-on-modules)",
            Rule::ToolsDependency => "rule 4 (tools-dependency)",
            Rule::SqlTableOwnership => "rule 5 (sql-table-ownership)",
            Rule::OwnMigrations => "rule 5 (own-migrations)",
        }
    }

    /// The rule in one line.
    pub fn statement(self) -> &'static str {
        match self {
            Rule::ModuleDependsOnModule => {
                "a module may depend only on shared-kernel, *-api crates and third-party crates, \
                 never on another module crate or app"
            }
            Rule::ApiCrateDependency => {
                "an *-api crate may depend only on shared-kernel and serde, serde_json, uuid, \
                 async-trait, thiserror, time, chrono, utoipa (reqwest only as an optional \
                 dependency of feature `client`; insta for tests)"
            }
            Rule::KernelDependsOnWorkspace => {
                "shared-kernel may depend on no crate of the workspace"
            }
            Rule::OnlyAppDependsOnModules => "only app may depend on module implementation crates",
            Rule::ToolsDependency => {
                "tools may depend only on shared-kernel, *-api crates and third-party crates"
            }
            Rule::SqlTableOwnership => {
                "a module's SQL may touch only tables created by its own migrations/<m>/"
            }
            Rule::OwnMigrations => {
                "a module may embed only its own migrations from migrations/<m>/"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id(), self.statement())
    }
}

/// The modules and the edges between them. Call edges and event edges are kept apart: events
/// flowing back to a caller are the intended decoupling, not a cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleGraph {
    /// Module names, sorted.
    pub modules: Vec<String>,
    /// `(caller, callee)`: the caller's implementation or api crate depends on `<callee>-api`.
    pub call_edges: Vec<(String, String)>,
    /// `(publisher, subscriber)`: integration events of the publisher consumed by the
    /// subscriber.
    pub event_edges: Vec<(String, String)>,
}

impl ModuleGraph {
    fn of(ws: &Workspace) -> Self {
        let modules: BTreeSet<String> = ws
            .crates
            .iter()
            .filter_map(|c| c.kind.module().map(str::to_owned))
            .collect();
        let mut call_edges = BTreeSet::new();
        let mut event_edges = BTreeSet::new();
        for krate in &ws.crates {
            let Some(from) = krate.kind.module() else {
                continue;
            };
            let sources = rust_sources(&krate.dir.join("src"));
            // Dev-dependencies are test fixtures, not calls made by the running system.
            let runtime_deps = krate
                .deps
                .iter()
                .filter(|d| d.kind != DependencyKind::Development);
            for target in runtime_deps.filter_map(|d| d.workspace_crate.map(|i| &ws.crates[i])) {
                let Kind::Api(to) = &target.kind else {
                    continue;
                };
                if to == from {
                    continue;
                }
                // Depending on `x-api` is a call edge when the code names the trait `XApi`, an
                // event edge (x → from: events flow towards the consumer) when it names
                // `x_api::events`, and — if it names neither — a call edge, the conservative
                // reading of a dependency.
                let trait_name = format!("{}Api", capitalize(to));
                let events_path = format!("{}_api::events", to.replace('-', "_"));
                let calls = sources.contains(&trait_name);
                let listens = sources.contains(&events_path);
                if calls || !listens {
                    call_edges.insert((from.to_owned(), to.clone()));
                }
                if listens {
                    event_edges.insert((to.clone(), from.to_owned()));
                }
            }
        }
        Self {
            modules: modules.into_iter().collect(),
            call_edges: call_edges.into_iter().collect(),
            event_edges: event_edges.into_iter().collect(),
        }
    }

    /// A Mermaid flowchart: call edges solid, event edges dashed.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for module in &self.modules {
            out.push_str(&format!("    {module}[\"{module}\"]\n"));
        }
        for (from, to) in &self.call_edges {
            out.push_str(&format!("    {from} -->|calls| {to}\n"));
        }
        for (from, to) in &self.event_edges {
            out.push_str(&format!("    {from} -.->|events| {to}\n"));
        }
        out
    }
}

fn capitalize(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// All Rust source below `dir`, concatenated (empty when `dir` does not exist).
fn rust_sources(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// The workspace crates as the rules see them.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub root: PathBuf,
    pub crates: Vec<Crate>,
}

#[derive(Debug)]
pub(crate) struct Crate {
    pub name: String,
    pub kind: Kind,
    pub dir: PathBuf,
    pub manifest: PathBuf,
    pub deps: Vec<Dep>,
    /// Needed to see that `reqwest` in an api crate hides behind feature `client`.
    pub features: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Dep {
    /// The package name (not a rename), which is what the allow-list speaks of.
    pub name: String,
    pub kind: DependencyKind,
    pub optional: bool,
    /// `cfg(...)` or a target triple, for target-specific dependencies.
    pub platform: Option<String>,
    /// Index into [`Workspace::crates`] when this is a path dependency on a workspace crate.
    /// Matched by path, not name: crates.io has an unrelated `inventory` crate.
    pub workspace_crate: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    App,
    Kernel,
    Module(String),
    Api(String),
    /// `tools`: the lint, load generator, baseline and demo; kernel and api crates only.
    Tools,
    /// Any other workspace member (an xtask, a test crate): bound by rule 4 only.
    Other,
}

impl Kind {
    fn module(&self) -> Option<&str> {
        match self {
            Kind::Module(m) | Kind::Api(m) => Some(m),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Kind::App => "app crate",
            Kind::Kernel => "kernel crate",
            Kind::Module(_) => "module crate",
            Kind::Api(_) => "api crate",
            Kind::Tools => "tools crate",
            Kind::Other => "workspace crate",
        }
    }
}

impl Workspace {
    fn load(root: &Path) -> anyhow::Result<Self> {
        let manifest = root.join("Cargo.toml");
        anyhow::ensure!(
            manifest.is_file(),
            "{} is not a cargo workspace: it has no Cargo.toml",
            root.display()
        );
        let metadata = MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .exec()
            .with_context(|| format!("running `cargo metadata` on {}", manifest.display()))?;
        let root = PathBuf::from(metadata.workspace_root.clone());
        let packages = metadata.workspace_packages();
        let dirs: Vec<PathBuf> = packages
            .iter()
            .map(|p| {
                p.manifest_path
                    .parent()
                    .map(PathBuf::from)
                    .with_context(|| format!("manifest path of {} has no parent", p.name))
            })
            .collect::<anyhow::Result<_>>()?;
        let crates = packages
            .iter()
            .zip(&dirs)
            .map(|(package, dir)| Crate {
                name: package.name.to_string(),
                kind: classify(&root, dir),
                dir: dir.clone(),
                manifest: package.manifest_path.clone().into(),
                deps: package
                    .dependencies
                    .iter()
                    .map(|d| Dep {
                        name: d.name.clone(),
                        kind: d.kind,
                        optional: d.optional,
                        platform: d.target.as_ref().map(ToString::to_string),
                        workspace_crate: d
                            .path
                            .as_ref()
                            .and_then(|p| dirs.iter().position(|dir| dir == p.as_std_path())),
                    })
                    .collect(),
                features: package
                    .features
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        Ok(Self { root, crates })
    }

    /// `(module name, implementation crate directory)` for every module.
    fn module_dirs(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.crates.iter().filter_map(|c| match &c.kind {
            Kind::Module(m) => Some((m.as_str(), c.dir.as_path())),
            _ => None,
        })
    }
}

fn classify(root: &Path, dir: &Path) -> Kind {
    let parts: Vec<String> = dir
        .strip_prefix(root)
        .map(|rel| {
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["app"] => Kind::App,
        ["tools"] => Kind::Tools,
        ["shared-kernel"] => Kind::Kernel,
        ["modules", m] => Kind::Module((*m).to_owned()),
        ["modules", m, "api"] => Kind::Api((*m).to_owned()),
        _ => Kind::Other,
    }
}

/// `path` relative to `root` with `/` separators, for messages that read the same everywhere.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
