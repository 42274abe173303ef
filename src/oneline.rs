//! Errors here are one line. Some decoders' messages span several (npyz quotes the header with a
//! caret under the fault, as its pest parser reports; zune-jpeg repeats its cause after a newline),
//! so their text is folded: quoted source and carets dropped, the rest joined, repeats removed.

/// `e`'s message on one line.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        // pest's report: " --> 1:56", "|", "1 | {...}", "|   ^---"; keep the position and the
        // "= expected ..." line.
        let quoted = line.starts_with('|') || line.split_once(" | ").is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        let line = line.trim_start_matches(['=', ':']).trim();
        if line.is_empty() || quoted || parts.iter().any(|p| p.contains(line)) {
            continue;
        }
        parts.push(line);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_multi_line_reports() {
        let pest = "syntax error:  --> 1:10\n  |\n1 | {'descr':o'<f4'}\n  |          ^---\n  |\n  = expected value";
        assert_eq!(super::one_line(&pest), "syntax error:  --> 1:10 expected value");
        let jpeg = "Format error decoding Jpeg: Not enough bytes\n: Not enough bytes\n";
        assert_eq!(super::one_line(&jpeg), "Format error decoding Jpeg: Not enough bytes");
    }
}
