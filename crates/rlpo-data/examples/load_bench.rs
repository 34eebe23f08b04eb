//! Load-throughput check: `cargo run -p rlpo-data --example load_bench -- FILE [REPEATS]`.
//!
//! Loads FILE (`.parquet` or `.jsonl`, verl layout) REPEATS times (default 3) with the default
//! field names and prints rows/s of the best run. Make a file with `examples/make_bench_data.py`.

use std::path::PathBuf;
use std::time::Instant;

use rlpo_data::{load_jsonl, load_parquet, FieldNames};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: load_bench FILE [REPEATS]")?);
    let repeats: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let fields = FieldNames::default();
    let parquet = path.extension().is_some_and(|e| e == "parquet");
    let mut best = f64::INFINITY;
    let mut rows = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let samples = if parquet {
            load_parquet(&path, &fields, true, None)?
        } else {
            load_jsonl(&path, &fields, true, None)?
        };
        best = best.min(t.elapsed().as_secs_f64());
        rows = samples.len();
    }
    println!(
        "{}: {rows} rows, best of {repeats}: {:.3} s, {:.0} rows/s",
        path.display(),
        best,
        rows as f64 / best
    );
    Ok(())
}
