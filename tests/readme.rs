//! Keeps README.md true: runs every command of its ```console blocks
//! against a real partlog and compares what it prints with what the README
//! shows.
//!
//! # The README's convention
//!
//! In a block fenced with ```` ```console ````, a line starting with `$ `
//! is a command; a line ending in `\` or inside a single-quoted string
//! continues on the next line, and a heredoc
//! (`<<'EOF'` ... `EOF`) belongs to it. The lines after it, up to the next
//! command or the block's end, are what it prints: standard output and
//! standard error together. A command must exit 0 unless what it prints has
//! a line starting with `error:`. Commands run with bash, in README order,
//! all against one partlog started for the test (`PARTLOG_SERVER` points
//! the CLI at it; `127.0.0.1:50051` in a command, as in `buf curl`
//! examples, is replaced by its address), with the built `partlog` and the
//! project's tools (`make tools`: buf) first on `PATH`.
//!
//! # What may differ
//!
//! - Stream names: every name a block creates (`partlog stream create
//!   NAME`) is replaced in the commands by a random name of the same length
//!   (so tables keep their widths) and replaced back in the output, so that
//!   runs never share a stream.
//! - Times: RFC 3339 timestamps (`2026-11-28T09:00:00.123Z`) are compared
//!   as placeholders; records get the broker's clock.
//! - Partition interleaving in `partlog tail`: partlog orders records
//!   within a partition only, so tail output is compared partition by
//!   partition (lines of one partition in order).
//! - `partlog offsets` is retried for up to 10 s while it differs: a group
//!   member that just left (a `partlog tail` that ended) is unregistered
//!   by partlog asynchronously, so its ACTIVE column may still name it for
//!   a moment.
//!
//! Nothing else is normalised: an edited output fails the test. The README
//! shows the single local broker of `scripts/rabbitmq.sh` (partition
//! leaders `localhost:5552`), which `make test` runs against.
//! `PARTLOG_README_BLESS=1` writes the real outputs into README.md instead
//! of comparing, for when the CLI's output changes on purpose (review the
//! diff).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Partlog;
use rand::Rng;

/// The address the README's examples use (`make run`).
const README_SERVER: &str = "127.0.0.1:50051";
/// Longest a README command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a differing `partlog offsets` is retried.
const SETTLE: Duration = Duration::from_secs(10);

/// A command of a console block and what the README says it prints.
#[derive(Debug)]
struct Example {
    /// The command as bash runs it (without `$ `).
    command: String,
    expected: Vec<String>,
    /// README line numbers (0-based) of the expected output.
    output_lines: std::ops::Range<usize>,
    /// README line number of the command, for messages.
    line: usize,
}

/// The ```console blocks' commands, in README order.
fn examples(readme: &str) -> Vec<Example> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```console" {
            i += 1;
            continue;
        }
        i += 1;
        while i < lines.len() && lines[i].trim_end() != "```" {
            let Some(first) = lines[i].strip_prefix("$ ") else {
                panic!(
                    "README.md line {}: a console block's output must follow a `$ ` command",
                    i + 1
                );
            };
            let line = i;
            let mut command = first.to_owned();
            let mut heredoc = heredoc_end(first);
            while continues(&command) {
                i += 1;
                command.push('\n');
                command.push_str(lines[i]);
                heredoc = heredoc.or_else(|| heredoc_end(lines[i]));
            }
            i += 1;
            if let Some(end) = heredoc {
                while i < lines.len() && lines[i] != end {
                    command.push('\n');
                    command.push_str(lines[i]);
                    i += 1;
                }
                assert!(
                    i < lines.len(),
                    "README.md line {}: heredoc without {end}",
                    line + 1
                );
                command.push('\n');
                command.push_str(lines[i]);
                i += 1;
            }
            let start = i;
            while i < lines.len() && !lines[i].starts_with("$ ") && lines[i].trim_end() != "```" {
                i += 1;
            }
            examples.push(Example {
                command,
                expected: lines[start..i].iter().map(|l| (*l).to_owned()).collect(),
                output_lines: start..i,
                line,
            });
        }
        i += 1;
    }
    examples
}

/// A command goes on on the next line after a `\` or inside a quote.
fn continues(command: &str) -> bool {
    command.ends_with('\\') || command.matches('\'').count() % 2 == 1
}

/// The terminator of a heredoc the line starts (`<<'EOF'`, `<<EOF`).
fn heredoc_end(line: &str) -> Option<String> {
    let rest = &line[line.find("<<")? + 2..];
    let word: String = rest
        .trim_start_matches('-')
        .trim_start()
        .trim_matches(|c| c == '\'' || c == '"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Stream names the README creates, each with a fresh name of its length.
fn stream_names(examples: &[Example]) -> BTreeMap<String, String> {
    let mut rng = rand::rng();
    let mut names = BTreeMap::new();
    for example in examples {
        let words: Vec<&str> = example.command.split_whitespace().collect();
        for window in words.windows(4) {
            if window[..3] == ["partlog", "stream", "create"] {
                let name = window[3].to_owned();
                assert!(
                    name.len() >= 6,
                    "README.md line {}: stream {name:?} needs 6 characters or more so that \
                     the test's unique names cannot collide",
                    example.line + 1
                );
                let unique: String = (0..name.len())
                    .map(|i| {
                        let alphabet: &[u8] = if i == 0 {
                            b"abcdefghijklmnopqrstuvwxyz"
                        } else {
                            b"abcdefghijklmnopqrstuvwxyz0123456789"
                        };
                        alphabet[rng.random_range(0..alphabet.len())] as char
                    })
                    .collect();
                names.insert(name, unique);
            }
        }
    }
    names
}

/// Replaces whole words (names are delimited by anything but
/// `[A-Za-z0-9_.]`; `-` delimits, so `orders-0` is `orders` + `-0`).
fn replace_words(text: &str, from: &str, to: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut result = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !is_name(c))
            && (at > 0 || result.chars().next_back().is_none_or(|c| !is_name(c)));
        let after = &rest[at + from.len()..];
        let after_ok = after.chars().next().is_none_or(|c| !is_name(c));
        result.push_str(&rest[..at]);
        result.push_str(if before_ok && after_ok { to } else { from });
        rest = after;
    }
    result.push_str(rest);
    result
}

/// RFC 3339 UTC times (`2026-11-28T09:00:00Z`, with any fraction) become
/// `<time>`.
fn mask_times(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut masked = String::new();
    let mut i = 0;
    let digit = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_digit);
    let at = |j: usize, c: u8| bytes.get(j) == Some(&c);
    while i < bytes.len() {
        let date_time = (0..4).all(|k| digit(i + k))
            && at(i + 4, b'-')
            && digit(i + 5)
            && digit(i + 6)
            && at(i + 7, b'-')
            && digit(i + 8)
            && digit(i + 9)
            && at(i + 10, b'T')
            && digit(i + 11)
            && digit(i + 12)
            && at(i + 13, b':')
            && digit(i + 14)
            && digit(i + 15)
            && at(i + 16, b':')
            && digit(i + 17)
            && digit(i + 18);
        if date_time {
            let mut end = i + 19;
            if at(end, b'.') {
                end += 1;
                while digit(end) {
                    end += 1;
                }
            }
            if at(end, b'Z') {
                masked.push_str("<time>");
                i = end + 1;
                continue;
            }
        }
        // Copy one whole character.
        let c = line[i..].chars().next().expect("in bounds");
        masked.push(c);
        i += c.len_utf8();
    }
    masked
}

/// The partition a line of `partlog tail` output is about: the first
/// column of a table row, `"partition":N` of a JSON line; `None` for the
/// header.
fn partition_of(line: &str) -> Option<u32> {
    if let Some(json) = line.strip_prefix('{') {
        let value = &json[json.find("\"partition\":")? + 12..];
        return value
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok();
    }
    line.split_whitespace().next()?.parse().ok()
}

/// Output lines as compared: times masked, and for `partlog tail` the
/// partitions' lines one partition after the other.
fn normalise(command: &str, lines: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = lines.iter().map(|l| mask_times(l)).collect();
    if command.contains("partlog tail") {
        // Stable: each partition's lines keep their order.
        lines.sort_by_key(|line| partition_of(line).map_or(-1, i64::from));
    }
    lines
}

/// Runs one command with bash; returns its output lines and exit status.
fn run(command: &str, path: &str, server: &str, workdir: &Path) -> (Vec<String>, bool) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail\nexec 2>&1\n{command}"))
        .env("PATH", path)
        .env("PARTLOG_SERVER", server)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run bash");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("read the output");
        text
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`{command}` ran longer than {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().expect("output reader");
    (text.lines().map(str::to_owned).collect(), status.success())
}

/// Deletes the test's streams however the test ends.
struct Cleanup {
    streams: Vec<String>,
    server: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for stream in &self.streams {
            let _ = Command::new(env!("CARGO_BIN_EXE_partlog"))
                .args(["stream", "delete", stream, "--server", &self.server])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where `make tools` puts buf and its siblings.
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin")
}

/// `PATH` with the built partlog and the project's tools first.
fn search_path(bin_dir: &Path) -> String {
    let system = std::env::var("PATH").unwrap_or_default();
    format!("{}:{}:{system}", bin_dir.display(), tools_dir().display())
}

#[tokio::test]
async fn readme_examples_print_what_the_readme_shows() {
    let readme_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    let examples = examples(&readme);

    // The README documents every subcommand with an example.
    for subcommand in [
        "partlog stream create",
        "partlog stream describe",
        "partlog stream delete",
        "partlog publish",
        "partlog read",
        "partlog tail",
        "partlog offsets",
        "partlog commit",
        "partlog reset",
        "partlog groups",
    ] {
        assert!(
            examples.iter().any(|e| e.command.contains(subcommand)),
            "README.md has no console example of `{subcommand}`"
        );
    }

    if examples.iter().any(|e| e.command.starts_with("buf ")) {
        assert!(
            tools_dir().join("buf").exists(),
            "README.md has `buf curl` examples, but {} has no buf: run `make tools` \
             (`make test` does)",
            tools_dir().display()
        );
    }

    let partlog = Partlog::start().await;
    let names = stream_names(&examples);
    let _cleanup = Cleanup {
        streams: names.values().cloned().collect(),
        server: partlog.url(),
    };
    let bin_dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_partlog"),
        bin_dir.path().join("partlog"),
    )
    .expect("link partlog");
    let path = search_path(bin_dir.path());
    let workdir = tempfile::tempdir().expect("temp dir");
    let bless = std::env::var_os("PARTLOG_README_BLESS").is_some();
    let mut blessed: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();

    for example in &examples {
        let mut command = example.command.replace(README_SERVER, &partlog.addr);
        for (name, unique) in &names {
            command = replace_words(&command, name, unique);
        }
        let retry_until = Instant::now() + SETTLE;
        loop {
            let (mut output, succeeded) = run(&command, &path, &partlog.url(), workdir.path());
            for (name, unique) in &names {
                output = output
                    .iter()
                    .map(|line| replace_words(line, unique, name))
                    .collect();
            }
            let expected = normalise(&example.command, &example.expected);
            let actual = normalise(&example.command, &output);
            if bless {
                // Outputs that only differ in what may vary stay as they are.
                if actual != expected {
                    blessed.push((example.output_lines.clone(), output));
                }
                break;
            }
            if actual != expected
                && example.command.starts_with("partlog offsets")
                && Instant::now() < retry_until
            {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            assert_eq!(
                actual,
                expected,
                "README.md line {}: `{}` printed (left) what the README does not show (right):\n{}\n\
                 partlog's log:\n{}",
                example.line + 1,
                example.command,
                output.join("\n"),
                partlog.log()
            );
            let shows_error = example.expected.iter().any(|l| l.starts_with("error:"));
            assert!(
                succeeded || shows_error,
                "README.md line {}: `{}` failed:\n{}",
                example.line + 1,
                example.command,
                output.join("\n")
            );
            break;
        }
    }

    if bless {
        let mut lines: Vec<String> = readme.lines().map(str::to_owned).collect();
        for (range, output) in blessed.into_iter().rev() {
            lines.splice(range, output);
        }
        std::fs::write(&readme_path, lines.join("\n") + "\n").expect("write README.md");
    }
}

#[test]
fn console_blocks_are_parsed_into_commands_and_outputs() {
    let readme = "text\n```console\n$ partlog a \\\n  --b\nout 1\nout 2\n$ partlog c <<'EOF'\nin\nEOF\n$ partlog d '{\n}'\n```\n```sh\n$ not run\n```\n";
    let examples = examples(readme);
    let commands: Vec<&str> = examples.iter().map(|e| e.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "partlog a \\\n  --b",
            "partlog c <<'EOF'\nin\nEOF",
            "partlog d '{\n}'"
        ]
    );
    assert_eq!(examples[0].expected, ["out 1", "out 2"]);
    assert_eq!(examples[0].output_lines, 4..6);
    assert!(examples[1].expected.is_empty());
}

#[test]
fn normalisation_masks_times_and_partition_interleaving_only() {
    assert_eq!(
        mask_times("0  3  2026-11-28T09:00:00.123Z  k  v 2026-11-28 x"),
        "0  3  <time>  k  v 2026-11-28 x"
    );
    assert_eq!(
        mask_times("{\"t\":\"2026-11-28T09:00:00Z\"}"),
        "{\"t\":\"<time>\"}"
    );
    let tail = |lines: &[&str]| {
        normalise(
            "partlog tail s",
            &lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        tail(&[
            "PARTITION  OFFSET",
            "2  0",
            "0  0",
            "2  1",
            "{\"partition\":1}"
        ]),
        tail(&[
            "PARTITION  OFFSET",
            "0  0",
            "{\"partition\":1}",
            "2  0",
            "2  1"
        ])
    );
    assert_ne!(tail(&["2  1", "2  0"]), tail(&["2  0", "2  1"]));
    assert_eq!(
        replace_words(
            "orders orders-0 \"orders\" borders orders_x",
            "orders",
            "abc123"
        ),
        "abc123 abc123-0 \"abc123\" borders orders_x"
    );
}

/// The README's Layout block.
fn layout_block(readme: &str) -> &str {
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("a Layout section");
    let block = section.split("```").nth(1).expect("a code block in Layout");
    block
}

/// Every file under `dir` (relative to the crate), sorted.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, into: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                into.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(root, &root.join(dir), &mut files);
    files.sort();
    files
}

/// The Layout section names every file under src/: by its path, or by its
/// name in the entry of a folder holding it (the folder's line and the
/// lines that continue it; a sub-folder's files with the sub-folder). A new or moved file must be described where a reader of
/// the tree looks.
#[test]
fn the_layout_names_every_source_file() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let block = layout_block(&readme);
    // Entries: a line starting with a path, and the indented lines after it.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with(' ') {
            if let Some((_, text)) = entries.last_mut() {
                text.push_str(line);
            }
        } else if let Some(path) = line.split_whitespace().next() {
            entries.push((path.to_string(), line.to_string()));
        }
    }
    let mut missing = Vec::new();
    for file in files_under("src") {
        let named = entries.iter().any(|(path, text)| {
            if *path == file {
                return true;
            }
            // A folder's entry names what is in it, sub-folders as `sub/`.
            let Some(inside) = file
                .strip_prefix(path.as_str())
                .filter(|_| path.ends_with('/'))
            else {
                return false;
            };
            match inside.rsplit_once('/') {
                None => text.contains(inside),
                Some((sub, name)) => text.contains(&format!("{sub}/")) && text.contains(name),
            }
        });
        if !named {
            missing.push(file);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's Layout does not name {missing:?}"
    );
}

/// Only the broker adapter knows the client library: replacing or dropping
/// it (or its patched copy) is a change in src/broker/ only.
#[test]
fn only_the_broker_adapter_uses_the_client_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let outside: Vec<String> = files_under("src")
        .into_iter()
        .filter(|file| !file.starts_with("src/broker/"))
        .filter(|file| {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            text.contains("rabbitmq_stream_client") || text.contains("rabbitmq_stream_protocol")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "the client library is used in {outside:?}"
    );
}
