//! Python programs of the tests (the Python example, native Python stream
//! clients) run in virtualenvs under the target directory, made with
//! `python3 -m venv` and filled by pip from a requirements file once per
//! content of that file (later runs reuse them). Without python3, venv, pip
//! or PyPI a test fails, saying which step failed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// FNV-1a: a hash that stays the same across Rust versions, for the
/// virtualenv's directory name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs a setup step and fails the test with its output if it fails.
fn setup_step(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e} (is python3 installed?)"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The virtualenv for the pinned `requirements`, made if missing; its
/// interpreter is `bin/python` in it.
pub fn virtualenv(requirements: &Path) -> PathBuf {
    let pinned = std::fs::read(requirements)
        .unwrap_or_else(|e| panic!("read {}: {e}", requirements.display()));
    let name = format!("python-venv-{:016x}", fnv1a(&pinned));
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Tests of one binary build it once, one after the other.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if venv.join("ready").exists() {
        return venv;
    }
    // Built aside and renamed into place, so that a run that dies half way
    // or a concurrent run never leaves a half-filled virtualenv behind.
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    setup_step(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&building),
    );
    setup_step(
        &format!("pip install -r {}", requirements.display()),
        Command::new(building.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(requirements),
    );
    std::fs::write(building.join("ready"), b"").expect("mark the virtualenv ready");
    if std::fs::rename(&building, &venv).is_err() {
        // Another run finished first; use its virtualenv.
        let _ = std::fs::remove_dir_all(&building);
        assert!(venv.join("ready").exists(), "no virtualenv at {venv:?}");
    }
    venv
}
