//! The `bounded` binary itself: `serve` with no flags, graceful stop, `arch check`.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bounded");

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn serve_without_flags_starts_on_sqlite_under_data_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        // Port 0 through the environment: every flag has a BOUNDED_* variable.
        .env("BOUNDED_LISTEN", "127.0.0.1:0")
        .env_remove("BOUNDED_DATABASE_URL")
        .env_remove("BOUNDED_DATA_DIR")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on a thread, so that a server that never says where it listens fails the
    // test at the deadline instead of blocking it.
    let (reader, lines, url) = crate::support::read_log_until_url(&mut child);
    let health = http_get(&url, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    for module in app::config::MODULES {
        assert!(
            dir.path()
                .join("data")
                .join(format!("{module}.sqlite"))
                .is_file()
        );
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
}

/// A bare HTTP/1.1 GET, so the test does not depend on a client crate's defaults.
fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn arch_check_passes_on_the_tree() {
    let output = Command::new(BIN)
        .args(["arch", "check", "--workspace"])
        .arg(workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn arch_check_exits_1_naming_the_rule_when_orders_depends_on_inventory() {
    let copy = tempfile::tempdir().unwrap();
    copy_tree(workspace_root(), copy.path());
    let manifest = copy.path().join("modules/orders/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replace(
        "[dependencies]\n",
        "[dependencies]\ninventory.workspace = true\n",
    );
    std::fs::write(&manifest, text).unwrap();

    let output = Command::new(BIN)
        .args(["arch", "check", "--workspace"])
        .arg(copy.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rule 1"), "{stderr}");
    assert!(
        stderr.contains("orders") && stderr.contains("inventory"),
        "{stderr}"
    );
}

/// Copies the sources of the workspace (not `target/`, `.git/` or data).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".git", "target", "data"].iter().any(|skip| name == *skip) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// `bounded serve` on SQLite in `dir`, on a free port; returns the process and its URL.
fn serve_on_sqlite(dir: &Path) -> (std::process::Child, String) {
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("BOUNDED_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_log, _lines, url) = crate::support::read_log_until_url(&mut server);
    (server, url)
}

#[test]
fn demo_seeds_a_running_instance_and_every_order_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_on_sqlite(dir.path());
    let demo = Command::new(BIN)
        .args([
            "demo",
            "--url",
            &url,
            "--orders",
            "25",
            "--customers",
            "3",
            "--products",
            "3",
        ])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(stdout.contains("registered 3 customers"), "{stdout}");
    assert!(stdout.contains("placed 25/25 orders"), "{stdout}");
    assert!(stdout.contains("settled 25 orders"), "{stdout}");
    assert!(stdout.contains("CONFIRMED"), "{stdout}");

    let unreachable = Command::new(BIN)
        .args(["demo", "--url", "http://127.0.0.1:9", "--orders", "1"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("is `bounded serve` running"));
}

/// `bounded bench` with a small catalog and 4 clients for `duration`, figures into `json`.
fn small_bench(url: &str, duration: &str, json: &Path) -> std::process::Output {
    small_bench_with(url, duration, json, &[])
}

fn small_bench_with(
    url: &str,
    duration: &str,
    json: &Path,
    extra: &[&str],
) -> std::process::Output {
    let args = [
        "bench",
        "--url",
        url,
        "--duration",
        duration,
        "--clients",
        "4",
        "--customers",
        "5",
        "--products",
        "10",
        "--warehouses",
        "2",
        "--json",
    ];
    Command::new(BIN)
        .args(args)
        .arg(json)
        .args(extra)
        .output()
        .unwrap()
}

/// The open loop (`--rate`) starts orders on its schedule: 25/s for 2 s is 50 orders, all
/// settled, with their latency measured from their scheduled start.
#[test]
fn bench_open_loop_starts_orders_at_the_given_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_on_sqlite(dir.path());
    let json = dir.path().join("bench.json");
    let bench = small_bench_with(&url, "2s", &json, &["--rate", "25"]);
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("open loop of 25 orders/s"), "{stderr}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(figures["rate"], 25.0, "{figures}");
    assert_eq!(figures["placed"], 50, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    let settled = figures["confirmed"].as_u64().unwrap() + figures["rejected"].as_u64().unwrap();
    assert_eq!(settled, 50, "{figures}");
    // Each latency is its own order's: far below the run's 2 s, which a latency measured when
    // the run ends (from a start up to 2 s earlier) would reach.
    let latency = &figures["place_to_terminal_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0, "{figures}");
    assert!(latency["max"].as_f64().unwrap() < 1_500.0, "{figures}");
}

/// The load generator's smoke run, so that it cannot rot: a couple of seconds against the real
/// binary, figures that add up.
#[test]
fn bench_smoke_run_reports_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_on_sqlite(dir.path());
    let json = dir.path().join("bench.json");
    let bench = small_bench(&url, "2s", &json);
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("placements/s"), "{stdout}");
    assert!(stderr.contains("placed"), "a progress line: {stderr}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let placed = figures["placed"].as_u64().unwrap();
    let settled = figures["confirmed"].as_u64().unwrap() + figures["rejected"].as_u64().unwrap();
    assert!(placed > 0, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    assert_eq!(settled, placed, "every placed order settled: {figures}");
    let latency = &figures["place_to_terminal_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0);
    assert!(
        latency["p50"].as_f64() <= latency["p99"].as_f64()
            && latency["p99"].as_f64() <= latency["max"].as_f64()
    );
}

/// The single-transaction baseline serves what the load generator calls, and stock and credit
/// hold in it too: the same smoke run against it.
#[test]
fn the_baseline_answers_the_load_generator_with_settled_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut baseline = Command::new(BIN)
        .args(["baseline", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("BOUNDED_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_log, _lines, url) = crate::support::read_log_until_url(&mut baseline);
    let json = dir.path().join("baseline.json");
    let bench = small_bench(&url, "1s", &json);
    baseline.kill().unwrap();
    baseline.wait().unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(figures["confirmed"].as_u64().unwrap() > 0, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    assert_eq!(figures["confirmed"], figures["placed"], "{figures}");
    assert!(dir.path().join("baseline.sqlite").is_file());
}
