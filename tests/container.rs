//! The container files users build and run (Dockerfile, docker-compose.yml)
//! checked without a Docker engine, which the project's machines lack: what
//! can break them when the project changes is the set of files a build
//! stage needs and the configuration variables they set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use partlog::config::Config;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(file: &str) -> String {
    std::fs::read_to_string(project().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The sources of the Dockerfile's `COPY` instructions before its first
/// `RUN`: what the dependency layer is built from.
fn dependency_layer_sources(dockerfile: &str) -> Vec<String> {
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS builder"))
        .expect("a builder stage");
    let before_run = build_stage.split("\nRUN ").next().unwrap();
    before_run
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .flat_map(|args| {
            let mut words: Vec<&str> = args.split_whitespace().collect();
            words.pop(); // the destination
            words.into_iter().map(str::to_string)
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// The platform this test runs on, as rustc names it (`host:` of
/// `rustc -vV`).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("run {rustc} -vV: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("{rustc} -vV names no host"))
        .to_string()
}

/// The dependency layer resolves every dependency from the files it copies
/// and the placeholder sources it writes (a path dependency it does not
/// copy fails the image build).
///
/// Offline, for this platform only: the build of this test fetched exactly
/// the host's crates, while a resolution for every platform would need
/// crates (Windows, Android, ...) that no build here downloads — they are in
/// a cargo cache only by accident.
#[test]
fn the_dockerfile_dependency_layer_has_what_cargo_needs() {
    let sources = dependency_layer_sources(&read("Dockerfile"));
    assert!(sources.contains(&"Cargo.lock".to_string()), "{sources:?}");
    let context = tempfile::tempdir().unwrap();
    for source in &sources {
        copy_tree(&project().join(source), &context.path().join(source));
    }
    std::fs::create_dir_all(context.path().join("src")).unwrap();
    std::fs::write(context.path().join("src/main.rs"), "fn main() {}").unwrap();
    std::fs::write(context.path().join("src/lib.rs"), "").unwrap();
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(context.path())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "the dependency layer ({sources:?}) cannot resolve the dependencies:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `PARTLOG_*` variables of a file: `KEY: value` (compose) or
/// `ENV KEY=value` (Dockerfile) lines, commented-out examples included —
/// they are there to be uncommented.
fn partlog_variables(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(|line| line.trim_start_matches([' ', '#']))
        .map(|line| line.strip_prefix("ENV ").unwrap_or(line))
        .filter(|line| line.starts_with("PARTLOG_"))
        .filter_map(|line| line.split_once([':', '=']))
        .map(|(key, value)| {
            let value = value.trim().trim_matches('"');
            // An elided example value (`...`) stands for any string.
            let value = if value == "..." { "x" } else { value };
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}

/// Every partlog setting the image and the compose file set is one partlog
/// accepts, with a value it accepts.
#[test]
fn the_container_files_set_only_settings_partlog_accepts() {
    for file in ["Dockerfile", "docker-compose.yml"] {
        let variables = partlog_variables(&read(file));
        assert!(
            variables.contains_key("PARTLOG_SERVER_LISTEN"),
            "{file}: {variables:?}"
        );
        for (key, value) in &variables {
            let one = HashMap::from([(key.clone(), value.clone())]);
            if let Err(e) = Config::load(None, &one) {
                panic!("{file}: {key}={value}: {e}");
            }
        }
    }
}

/// The image builds with a pinned toolchain (a full `rust:X.Y.Z` tag, the
/// project's own toolchain version at least), and reports its health with
/// `partlog health`, a subcommand the binary has.
#[test]
fn the_image_pins_its_toolchain_and_checks_its_health() {
    let dockerfile = read("Dockerfile");
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust builder image");
    let tag = builder.split_whitespace().next().unwrap();
    let version = tag.split('-').next().unwrap();
    assert_eq!(
        version
            .split('.')
            .filter(|p| p.parse::<u32>().is_ok())
            .count(),
        3,
        "the builder image is pinned to a full Rust version, not {tag}"
    );

    let healthcheck = dockerfile
        .split("\nHEALTHCHECK ")
        .nth(1)
        .expect("a HEALTHCHECK instruction");
    let command = healthcheck
        .split("CMD [")
        .nth(1)
        .and_then(|c| c.split(']').next())
        .expect("an exec-form CMD");
    let words: Vec<String> = command
        .split(',')
        .map(|w| w.trim().trim_matches('"').to_string())
        .collect();
    assert_eq!(words[..2], ["partlog", "health"], "{words:?}");
    let output = Command::new(env!("CARGO_BIN_EXE_partlog"))
        .args(&words[1..])
        .arg("--help")
        .output()
        .expect("run partlog");
    assert!(
        output.status.success(),
        "partlog {:?} --help: {}",
        &words[1..],
        String::from_utf8_lossy(&output.stderr)
    );
}
