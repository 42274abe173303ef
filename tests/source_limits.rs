//! The size limits of issue #14, kept: no source file over 400 lines and no function over 80, in
//! every language the project is written in (Rust, CUDA C++, the emulator's C++, the Python
//! fixture generators and the scripts). Small files and short functions are what let a newcomer
//! find an op and read it whole; a test keeps the limit from eroding one line at a time.
//!
//! Functions are found by brace matching on the source with comments and literals blanked out:
//! a `{` opens a function when the text since the previous `;`, `{` or `}` is a Rust `fn` header,
//! or (C/C++) a header ending in `)` that is not a control statement or a lambda. The length runs
//! from the header's first line to the closing brace, as an editor shows it.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

/// Directories and files held to the limits, relative to the repository root.
const ROOTS: [&str; 8] = ["src", "tests", "benches", "kernels", "build", "build.rs", "fuzz/fuzz_targets", "scripts"];

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ROOTS.iter().map(|r| root.join(r)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if is_source(&p) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Code, not data: fixture JSON and safetensors files are generated, and excluded.
fn is_source(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        Some(ext) => ["rs", "cu", "cuh", "cpp", "h", "py", "sh"].contains(&ext),
        // scripts/* are extensionless bash
        None => p.parent().is_some_and(|d| d.ends_with("scripts")),
    }
}

fn has_braced_functions(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("rs" | "cu" | "cuh" | "cpp" | "h"))
}

/// `text` with comments, string and character literals replaced by spaces (newlines kept), so
/// braces inside them do not count.
fn blank_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[char]| out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    while i < c.len() {
        let rest = &c[i..];
        let end = if rest.starts_with(&['/', '/']) {
            i + rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            i + 2 + find(&rest[2..], &['*', '/']).map_or(rest.len() - 2, |p| p + 2)
        } else if let Some(len) = raw_string(rest) {
            i + len
        } else if rest[0] == '"' {
            i + 1 + quoted(&rest[1..], '"')
        } else if rest[0] == '\'' && (rest.get(1) == Some(&'\\') || rest.get(2) == Some(&'\'')) {
            i + 1 + quoted(&rest[1..], '\'')
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        blank(&mut out, &c[i..end.min(c.len())]);
        i = end.min(c.len());
    }
    out
}

fn find(s: &[char], pat: &[char]) -> Option<usize> {
    s.windows(pat.len()).position(|w| w == pat)
}

/// Length of the literal's body up to and including the closing `close` (escapes skipped).
fn quoted(s: &[char], close: char) -> usize {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            ch if ch == close => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// A Rust raw string (`r"..."`, `r#"..."#`, `br#"..."#`) or a C++ raw string (`R"(...)"`) at the
/// start of `s`: its whole length.
fn raw_string(s: &[char]) -> Option<usize> {
    let start = if s.starts_with(&['b', 'r']) { 2 } else { usize::from(s.first() == Some(&'r')) };
    if start > 0 {
        let hashes = s[start..].iter().take_while(|&&ch| ch == '#').count();
        if s.get(start + hashes) == Some(&'"') {
            let close: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let body = start + hashes + 1;
            return Some(body + find(&s[body..], &close).map_or(s.len() - body, |p| p + close.len()));
        }
    }
    if s.starts_with(&['R', '"', '(']) {
        return Some(3 + find(&s[3..], &[')', '"']).map_or(s.len() - 3, |p| p + 2));
    }
    None
}

/// Whether the text before a `{` is a function's header (see the module comment).
fn is_function_header(header: &str, rust: bool) -> bool {
    let h = header.trim();
    if rust {
        return h.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w[0] == "fn" && !w[1].starts_with('('));
    }
    let h = h.trim_end_matches("const").trim_end_matches("noexcept").trim_end();
    let first = h.split(|ch: char| !ch.is_alphanumeric() && ch != '_').next().unwrap_or("");
    h.ends_with(')')
        && !["if", "for", "while", "switch", "catch", "do", "else", "return"].contains(&first)
        && !h.contains("](")
        && !h.contains('=')
}

/// (name, first line, length in lines) of every function longer than `max` lines.
fn long_functions(text: &str, rust: bool, max: usize) -> Vec<(String, usize, usize)> {
    // Preprocessor lines (#include, #pragma, #define) are neither headers nor bodies.
    let code: String = blank_literals(text)
        .lines()
        .map(|l| if l.trim_start().starts_with('#') { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let mut open: Vec<Option<(String, usize)>> = Vec::new();
    let (mut line, mut header, mut header_line) = (1, String::new(), None);
    let mut found = Vec::new();
    for ch in code.chars() {
        match ch {
            '{' => {
                let named = is_function_header(&header, rust).then(|| (name_of(&header), header_line.unwrap_or(line)));
                open.push(named);
                (header, header_line) = (String::new(), None);
            }
            '}' | ';' => {
                if ch == '}'
                    && let Some(Some((name, start))) = open.pop()
                    && line - start + 1 > max
                {
                    found.push((name, start, line - start + 1));
                }
                (header, header_line) = (String::new(), None);
            }
            _ => {
                if !ch.is_whitespace() && header_line.is_none() {
                    header_line = Some(line);
                }
                header.push(ch);
            }
        }
        if ch == '\n' {
            line += 1;
        }
    }
    found
}

/// The identifier before the header's first `(` (for C) or after `fn` (for Rust).
fn name_of(header: &str) -> String {
    let words: Vec<&str> = header.split_whitespace().collect();
    if let Some(i) = words.iter().position(|&w| w == "fn") {
        return words.get(i + 1).map_or("?", |w| w.split(['<', '(']).next().unwrap_or(w)).to_string();
    }
    // C: the identifier before the parameter list, the parenthesis matching the final `)` (not
    // the first one: `__launch_bounds__(256) name(...)`).
    let h = header.trim_end().trim_end_matches("const").trim_end_matches("noexcept").trim_end();
    let mut depth = 0;
    let open = h.char_indices().rev().find(|&(_, ch)| {
        depth += i32::from(ch == ')') - i32::from(ch == '(');
        depth == 0
    });
    let before = &h[..open.map_or(0, |(i, _)| i)];
    before.rsplit(|ch: char| !ch.is_alphanumeric() && ch != '_').find(|w| !w.is_empty()).unwrap_or("?").to_string()
}

#[test]
fn no_source_file_over_400_lines_and_no_function_over_80() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut problems, mut files, mut biggest) = (Vec::new(), 0, (0, PathBuf::new()));
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let lines = text.lines().count();
        files += 1;
        if lines > biggest.0 {
            biggest = (lines, rel.clone());
        }
        if lines > MAX_FILE_LINES {
            problems.push(format!("{}: {lines} lines (at most {MAX_FILE_LINES})", rel.display()));
        }
        if has_braced_functions(&path) {
            let rust = path.extension().is_some_and(|e| e == "rs");
            for (name, start, len) in long_functions(&text, rust, MAX_FN_LINES) {
                problems.push(format!("{}:{start}: fn {name} is {len} lines (at most {MAX_FN_LINES})", rel.display()));
            }
        }
    }
    println!("{files} source files; the largest: {} ({} lines)", biggest.1.display(), biggest.0);
    assert!(files > 100, "only {files} source files found: is ROOTS right?");
    assert!(problems.is_empty(), "over the limits:\n{}", problems.join("\n"));
}

/// The scanner itself: a planted long function is found in both languages, braces inside
/// literals and comments do not count, and control blocks, closures and lambdas are not functions.
#[test]
fn the_scanner_finds_a_planted_long_function_and_ignores_literals() {
    let body = |n: usize| (0..n).map(|i| format!("    let x{i} = \"{{\"; // }}\n")).collect::<String>();
    let rust = format!("fn short() {{\n{}}}\nfn long<T>(a: T) -> T where T: Copy {{\n{}    a\n}}\n", body(3), body(80));
    assert_eq!(long_functions(&rust, true, 80), vec![("long".to_string(), 6, 83)]);
    assert!(long_functions(&rust, true, 90).is_empty());
    let raw = format!(
        "fn f() {{\n    let s = r#\"}}}}\"#;\n    let c = '{{';\n    let l: &'static str = \"\";\n{}}}\n",
        body(2)
    );
    assert!(
        long_functions(&raw, true, 3).iter().any(|f| f.0 == "f" && f.2 == 7),
        "{:?}",
        long_functions(&raw, true, 3)
    );
    let lines = (0..81).map(|_| "  if (x) { y(); }\n").collect::<String>();
    let cuda = format!(
        "namespace a {{\nextern \"C\" __global__ void __launch_bounds__(256) k(float* p) {{\n{lines}  auto f = [&](int i) {{ return i; }};\n}}\n}}\n"
    );
    assert_eq!(long_functions(&cuda, false, 80), vec![("k".to_string(), 2, 84)]);
    let cpp_raw = "void g() {\n  asm(R\"(\n{ { {\n)\");\n}\n";
    assert_eq!(long_functions(cpp_raw, false, 4), vec![("g".to_string(), 1, 5)]);
}
