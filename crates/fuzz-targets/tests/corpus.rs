//! Replays every committed fuzz input on stable: the seeds (`fuzz/corpus/<target>/`) and the
//! inputs that once crashed, hung or ran out of memory (`fuzz/regressions/<target>/`), each
//! through the same function libFuzzer calls. A panic names the target and the file.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_fuzz_input_runs_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut total = 0;
    for (name, target) in logferry_fuzz_targets::TARGETS {
        let seeds = files(&fuzz.join("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "no seed corpus for fuzz target {name} in {}",
            fuzz.join("corpus").join(name).display()
        );
        for file in seeds
            .iter()
            .chain(files(&fuzz.join("regressions").join(name)).iter())
        {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(
                run.is_ok(),
                "fuzz target {name} panicked on {}",
                file.display()
            );
            total += 1;
        }
    }
    // Every target has a directory in fuzz/fuzz_targets and a [[bin]] in fuzz/Cargo.toml.
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in logferry_fuzz_targets::TARGETS {
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs missing"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    assert!(total >= logferry_fuzz_targets::TARGETS.len());
}
