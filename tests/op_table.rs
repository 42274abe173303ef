//! The op -> files table of docs/ops.md holds: every file it names exists and is named after its
//! op, and every kernel file and every launcher has a row. A file renamed, moved or added without
//! its row fails here.

use std::path::{Path, PathBuf};

const COLUMNS: [&str; 7] = ["op", "CUDA kernels", "CPU reference", "fast CPU", "CUDA launcher", "tests", "bench"];

/// The bench of the flat ops at bandwidth-sized buffers, shared by several ops (docs/ops.md, note 2).
const SHARED_BENCH: &str = "benches/ops.rs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One row of the table: the op and, per column after it, the cell's text.
struct Row {
    op: String,
    cells: Vec<String>,
}

/// The backticked words of a cell, in order.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// The table's rows, after checking its header.
fn parse(text: &str) -> Vec<Row> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| op |"));
    let header = cells(lines.next().expect("docs/ops.md has a table whose header starts with `| op |`"));
    assert_eq!(header, COLUMNS, "docs/ops.md: the table's columns");
    assert!(lines.next().is_some_and(|l| l.starts_with("| ---")), "docs/ops.md: no separator line under the header");
    let mut rows = Vec::new();
    for line in lines.take_while(|l| l.starts_with('|')) {
        let mut c = cells(line);
        assert_eq!(c.len(), COLUMNS.len(), "docs/ops.md: row {line:?} has {} cells", c.len());
        let op = backticked(&c[0]).first().unwrap_or_else(|| panic!("docs/ops.md: no `op` in {line:?}")).to_string();
        c.remove(0);
        rows.push(Row { op, cells: c });
    }
    assert!(!rows.is_empty(), "docs/ops.md: the table has no rows");
    rows
}

fn table() -> Vec<Row> {
    let path = root().join("docs/ops.md");
    parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Each cell names existing files, the first one named after the op, or is `—` (no such version).
fn check_row(row: &Row) -> Vec<String> {
    let mut problems = Vec::new();
    for (column, cell) in COLUMNS[1..].iter().zip(&row.cells) {
        if cell.starts_with('—') {
            continue;
        }
        let paths = backticked(cell);
        if paths.is_empty() {
            problems.push(format!("{}: {column}: neither `—` nor a file: {cell:?}", row.op));
        }
        for path in &paths {
            if !root().join(path).is_file() {
                problems.push(format!("{}: {column}: {path} does not exist", row.op));
            }
        }
        if let Some(first) = paths.first().filter(|p| **p != SHARED_BENCH) {
            let stem = Path::new(first).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if stem != row.op {
                problems.push(format!("{}: {column}: {first} is not named after the op", row.op));
            }
        }
    }
    problems
}

#[test]
fn every_file_in_the_table_exists_and_is_named_after_its_op() {
    let rows = table();
    let problems: Vec<String> = rows.iter().flat_map(check_row).collect();
    assert!(problems.is_empty(), "docs/ops.md does not hold:\n{}", problems.join("\n"));
}

/// The files of `dir` ending in `ext`, less `skip`, as paths from the repository root.
fn files(dir: &str, ext: &str, skip: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(ext) && !skip.contains(&name.as_str()))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_kernel_file_and_launcher_has_a_row() {
    let rows = table();
    let named = |column: usize| -> Vec<String> {
        rows.iter()
            .flat_map(|r| backticked(&r.cells[column]).into_iter().map(String::from).collect::<Vec<_>>())
            .collect()
    };
    let (kernels, launchers) = (named(0), named(3));
    // The emulator's self-test kernels are its own semantic checks (tests/emulator.rs), not an op.
    let missing: Vec<String> = files("kernels", ".cu", &["emu_selftest.cu"])
        .into_iter()
        .filter(|k| !kernels.contains(k))
        .chain(files("src/cuda", ".rs", &["mod.rs"]).into_iter().filter(|l| !launchers.contains(l)))
        .collect();
    assert!(missing.is_empty(), "files without a row in docs/ops.md: {missing:?}");
}

#[test]
fn the_parser_sees_a_wrong_row() {
    let table = "| op | CUDA kernels | CPU reference | fast CPU | CUDA launcher | tests | bench |\n\
                 | --- | --- | --- | --- | --- | --- | --- |\n\
                 | `silu` | `kernels/silu.cu` | `src/cpu/gelu.rs` | — (why) | `src/cuda/silu.rs` | `tests/nope.rs` | x |\n";
    let rows = parse(table);
    assert_eq!(rows.len(), 1);
    let problems = check_row(&rows[0]).join("\n");
    for want in ["src/cpu/gelu.rs does not exist", "gelu.rs is not named after the op", "tests/nope.rs does not exist"]
    {
        assert!(problems.contains(want), "{want:?} not reported:\n{problems}");
    }
    assert!(problems.contains("bench: neither"), "{problems}");
    assert!(!problems.contains("fast CPU"), "a `—` cell is allowed: {problems}");
}
