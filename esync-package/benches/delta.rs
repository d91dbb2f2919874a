//! Delta benchmark: our generator and applier beside `bsdiff`/`bspatch`,
//! `xdelta3 -9` and `zstd -19 --patch-from` on each pair of the corpus.
//!
//! Run: `cargo bench -p esync-package --features generate --bench delta`
//! (options after `--`: `--corpus DIR`, `--pair NAME`, `--reps N`,
//! `--no-install`). Rows "esync bsdiff+zstd" and "esync bsdiff+xz" are the
//! default (version 2, zero-run coded diff stream) containers; "container
//! v1" is the same xz encoding without zero-run coding, for comparison.
//! Every generation and application runs in a child process under
//! `/usr/bin/time` so that peak resident memory (maxrss) is comparable; ours
//! run as this same binary in `child` mode. Each output is checked against
//! the new image's SHA-256. The set-up installs the Debian packages `bsdiff`,
//! `xdelta3`, `zstd` and `time` when they are missing (as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_package::delta::{apply_patch, ApplyLimits, FileSource, TargetSpec};
use esync_package::digest::{from_hex, sha256, to_hex};
use esync_proto::message::PatchFormat;

#[derive(Parser)]
struct Args {
    /// Corpus directory with the old/new pairs.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Only this pair (libcrypto, postgres, libpython).
    #[arg(long)]
    pair: Option<String>,
    /// Runs per measurement (the fastest is kept).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Do not try to install missing tools.
    #[arg(long)]
    no_install: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Subcommand)]
enum Child {
    /// Generate a patch (child process).
    Gen {
        format: String,
        old: PathBuf,
        new: PathBuf,
        patch: PathBuf,
        /// Source window for segmented generation (0 = default).
        window: usize,
    },
    /// Apply a patch (child process).
    Apply {
        format: String,
        old: PathBuf,
        patch: PathBuf,
        out: PathBuf,
        length: u64,
        sha256: String,
        source_sha256: String,
    },
}

fn format(s: &str) -> PatchFormat {
    match s {
        "bsdiff40" => PatchFormat::Bsdiff40,
        "zstd" => PatchFormat::BsdiffZstd,
        _ => PatchFormat::BsdiffXz,
    }
}

fn run_child(c: Child) -> Result<(), Box<dyn std::error::Error>> {
    match c {
        Child::Gen {
            format: f,
            old,
            new,
            patch,
            window,
        } => {
            let (o, n) = (std::fs::read(old)?, std::fs::read(new)?);
            let mut opts = GenerateOptions::new(format(&f));
            if window > 0 {
                opts.max_window = window;
            }
            // `xz-v1`: the version 1 container (diff stream not zero-run coded).
            opts.zero_run_diff = f != "xz-v1";
            std::fs::write(patch, generate_patch(&o, &n, &opts)?)?;
        }
        Child::Apply {
            format: f,
            old,
            patch,
            out,
            length,
            sha256: sha,
            source_sha256,
        } => {
            let src = FileSource::open(&old)?;
            let src_sha = from_hex(&source_sha256).ok_or("bad source sha")?;
            let p = FileSource::open(&patch)?;
            let target = TargetSpec {
                length,
                sha256: from_hex(&sha).ok_or("bad sha")?,
            };
            let mut w = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(out)?);
            apply_patch(
                format(&f),
                &src,
                &src_sha,
                &p,
                &target,
                &mut w,
                &ApplyLimits::default(),
            )?;
            std::io::Write::flush(&mut w)?;
        }
    }
    Ok(())
}

struct Measure {
    secs: f64,
    rss_kib: u64,
}

/// Runs `cmd` under `/usr/bin/time -f %M`, returning wall time and maxrss.
fn measure(cmd: &[&str]) -> Result<Measure, String> {
    let tf = std::env::temp_dir().join(format!("esync-delta-time-{}", std::process::id()));
    let t0 = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&tf)
        .args(cmd)
        .output()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    let secs = t0.elapsed().as_secs_f64();
    // bsdiff/xdelta3 exit codes are 0 on success.
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rss_kib = std::fs::read_to_string(&tf)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    Ok(Measure { secs, rss_kib })
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn install_tools() {
    let missing: Vec<&str> = [
        ("bsdiff", "bsdiff"),
        ("xdelta3", "xdelta3"),
        ("zstd", "zstd"),
        ("/usr/bin/time", "time"),
    ]
    .iter()
    .filter(|(t, _)| !have(t))
    .map(|(_, p)| *p)
    .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?} (apt-get)");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .status();
}

struct Row {
    name: String,
    patch: u64,
    gen: Measure,
    apply: Measure,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(c) = args.child {
        return run_child(c);
    }
    if !args.no_install {
        install_tools();
    }
    let corpus = args
        .corpus
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/delta"));
    let reps = args.reps.max(1);
    let me = std::env::current_exe()?;
    let me = me.to_str().ok_or("exe path not UTF-8")?;
    let work = tempfile::tempdir()?;
    let pairs = [
        ("libcrypto", "libcrypto-3.0.17.bin", "libcrypto-3.0.20.bin"),
        ("postgres", "postgres-15.18.bin", "postgres-15.20.bin"),
        (
            "libpython",
            "libpython-3.11.2-u8.bin",
            "libpython-3.11.2-u9.bin",
        ),
    ];
    println!("# delta benchmark (corpus {})\n", corpus.display());
    for (pair, a, b) in pairs {
        if args.pair.as_deref().is_some_and(|p| p != pair) {
            continue;
        }
        let (old, new) = (corpus.join(a), corpus.join(b));
        let new_bytes = std::fs::read(&new)?;
        let (new_len, new_sha) = (new_bytes.len() as u64, sha256(&new_bytes));
        let s = |p: &Path| p.to_str().map(str::to_owned).ok_or("path not UTF-8");
        let (old_s, new_s) = (s(&old)?, s(&new)?);
        let old_sha = to_hex(&sha256(&std::fs::read(&old)?));
        let mut rows: Vec<Row> = Vec::new();
        let check = |out: &Path| -> Result<(), String> {
            let got = std::fs::read(out).map_err(|e| e.to_string())?;
            if sha256(&got) != new_sha {
                return Err(format!("{} is not the new image", out.display()));
            }
            Ok(())
        };
        let mut tool =
            |name: &str, gen: Vec<String>, apply: Vec<String>, patch: &Path, out: &Path| {
                let g = gen.iter().map(String::as_str).collect::<Vec<_>>();
                let a = apply.iter().map(String::as_str).collect::<Vec<_>>();
                let r = (|| -> Result<Row, String> {
                    // Best of three runs (the machine is shared); RSS of the same runs.
                    let best = |c: &[&str]| -> Result<Measure, String> {
                        let mut m = measure(c)?;
                        for _ in 1..reps {
                            let n = measure(c)?;
                            m.secs = m.secs.min(n.secs);
                            m.rss_kib = m.rss_kib.max(n.rss_kib);
                        }
                        Ok(m)
                    };
                    let gm = best(&g)?;
                    let am = best(&a)?;
                    check(out)?;
                    let patch = std::fs::metadata(patch).map_err(|e| e.to_string())?.len();
                    Ok(Row {
                        name: name.to_owned(),
                        patch,
                        gen: gm,
                        apply: am,
                    })
                })();
                match r {
                    Ok(r) => rows.push(r),
                    Err(e) => eprintln!("{pair} {name}: SKIPPED ({e})"),
                }
            };
        let w = |n: &str| work.path().join(format!("{pair}.{n}"));
        let ws = |n: &str| w(n).to_string_lossy().into_owned();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if have("bsdiff") {
            tool(
                "bsdiff/bspatch",
                v(&["bsdiff", &old_s, &new_s, &ws("bsdiff")]),
                v(&["bspatch", &old_s, &ws("bsdiff.out"), &ws("bsdiff")]),
                &w("bsdiff"),
                &w("bsdiff.out"),
            );
        }
        if have("xdelta3") {
            tool(
                "xdelta3 -9",
                v(&[
                    "xdelta3",
                    "-9",
                    "-e",
                    "-f",
                    "-s",
                    &old_s,
                    &new_s,
                    &ws("xd3"),
                ]),
                v(&[
                    "xdelta3",
                    "-d",
                    "-f",
                    "-s",
                    &old_s,
                    &ws("xd3"),
                    &ws("xd3.out"),
                ]),
                &w("xd3"),
                &w("xd3.out"),
            );
        }
        if have("zstd") {
            tool(
                "zstd -19 --patch-from",
                v(&[
                    "zstd",
                    "-q",
                    "-f",
                    "-19",
                    &format!("--patch-from={old_s}"),
                    &new_s,
                    "-o",
                    &ws("zst"),
                ]),
                v(&[
                    "zstd",
                    "-q",
                    "-f",
                    "-d",
                    &format!("--patch-from={old_s}"),
                    &ws("zst"),
                    "-o",
                    &ws("zst.out"),
                ]),
                &w("zst"),
                &w("zst.out"),
            );
        }
        for (label, f, window) in [
            ("esync bsdiff40", "bsdiff40", 0usize),
            ("esync bsdiff+zstd", "zstd", 0),
            ("esync bsdiff+xz", "xz", 0),
            ("esync bsdiff+xz, container v1", "xz-v1", 0),
            ("esync bsdiff+xz, 2 MiB windows", "xz", 2 << 20),
        ] {
            let tag = format!("{f}{window}");
            tool(
                label,
                v(&[me, "gen", f, &old_s, &new_s, &ws(&tag), &window.to_string()]),
                v(&[
                    me,
                    "apply",
                    f,
                    &old_s,
                    &ws(&tag),
                    &ws(&format!("{tag}.out")),
                    &new_len.to_string(),
                    &to_hex(&new_sha),
                    &old_sha,
                ]),
                &w(&tag),
                &w(&format!("{tag}.out")),
            );
        }
        let base = rows
            .iter()
            .find(|r| r.name.starts_with("bsdiff"))
            .map(|r| (r.patch, r.gen.secs, r.apply.secs));
        println!(
            "## {pair}: {} -> {} ({} -> {} bytes)\n",
            a,
            b,
            std::fs::metadata(&old)?.len(),
            new_len
        );
        println!("| tool | patch bytes | size vs bsdiff | gen s | gen speed-up vs bsdiff | apply s | apply vs bspatch | apply peak RSS MiB | gen peak RSS MiB |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in &rows {
            let (sz, gs, ap) = match base {
                Some((p, g, a)) => (
                    format!("{:.3}x", r.patch as f64 / p as f64),
                    format!("{:.1}x", g / r.gen.secs),
                    format!("{:.2}x", r.apply.secs / a),
                ),
                None => ("n/a".into(), "n/a".into(), "n/a".into()),
            };
            println!(
                "| {} | {} | {sz} | {:.2} | {gs} | {:.3} | {ap} | {:.1} | {:.1} |",
                r.name,
                r.patch,
                r.gen.secs,
                r.apply.secs,
                r.apply.rss_kib as f64 / 1024.0,
                r.gen.rss_kib as f64 / 1024.0
            );
        }
        println!(
            "\nRSS budget for apply (new image + 8 MiB): {:.1} MiB\n",
            new_len as f64 / (1 << 20) as f64 + 8.0
        );
    }
    Ok(())
}
