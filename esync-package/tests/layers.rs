//! The module layering of esync-package (issue 14, "No module cycle"): the
//! model never names the builder or the generator, and the generator never
//! names the model or the builder, so `package` ← `delta::generate` ←
//! `build` has no cycle. Checked on the sources, so it holds whatever
//! features a build enables. (That the model also *builds* without the
//! codecs and the generator is checked by `.ci/run` with
//! `cargo build -p esync-package --no-default-features` and `cargo tree`.)
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;

/// The Rust sources below `src/<dir>` (or the file `src/<dir>`).
fn sources(rel: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(rel);
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    assert!(!out.is_empty(), "no sources under {rel}");
    out
}

/// Panics if a non-comment line of the sources under `rel` names one of
/// `forbidden`.
fn refuse(rel: &str, forbidden: &[&str]) {
    for (file, text) in sources(rel) {
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for f in forbidden {
                assert!(!code.contains(f), "{file}:{}: names {f}: {line}", i + 1);
            }
        }
    }
}

#[test]
fn the_model_names_neither_the_builder_nor_the_generator() {
    let upper = [
        "crate::build",
        "delta::generate",
        "delta::cache",
        "generate::",
        "cache::",
    ];
    for model in [
        "package",
        "chunk.rs",
        "digest.rs",
        "delta/format.rs",
        "delta/zero_run.rs",
    ] {
        refuse(model, &upper);
    }
}

#[test]
fn the_generator_does_not_name_the_model_or_the_builder() {
    for generator in ["delta/generate.rs", "delta/cache.rs"] {
        refuse(
            generator,
            &["crate::package", "crate::build", "PackageError"],
        );
    }
}
