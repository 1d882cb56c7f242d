//! The one NDJSON line rule of every input basedata reads (update bodies
//! and files, batch comparisons, jobs): lines end at `\n`, a `\r` before it
//! is dropped, a UTF-8 byte-order mark before the first line is dropped,
//! and blank lines (ASCII white space only) are not lines at all: they are
//! neither answered nor counted.
//!
//! Hot path: runs once per line of inputs of millions; it borrows, never
//! copies.

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// The content of one raw line (without its `\n`), or `None` for a blank
/// one. `first` says it is the first line of its stream, where a
/// byte-order mark is dropped.
pub fn content(raw: &[u8], first: bool) -> Option<&[u8]> {
    let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
    if first {
        line = line.strip_prefix(BOM).unwrap_or(line);
    }
    // `all` of nothing is true: the empty line is blank too.
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

/// The raw lines of a complete buffer, blank ones included, without their
/// `\n`; a last line without `\n` counts.
pub fn raw_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', data).chain((!data.is_empty() && !data.ends_with(b"\n")).then_some(data.len()));
    ends.map(move |end| {
        let line = &data[start..end];
        start = end + 1;
        line
    })
}

/// Splits a byte stream that arrives in pieces into its lines, holding
/// only the unfinished last one between pieces.
#[derive(Debug, Default)]
pub struct Splitter {
    partial: Vec<u8>,
    /// Raw lines completed so far (blank ones included).
    seen: u64,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Takes the next piece; `each(number, content)` is called for every
    /// non-blank line completed by it, `number` counting from 1 over all
    /// raw lines (the line number an editor shows).
    pub fn push(&mut self, mut bytes: &[u8], each: &mut impl FnMut(u64, &[u8])) {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            let seg = &bytes[..nl];
            bytes = &bytes[nl + 1..];
            if self.partial.is_empty() {
                self.line(seg, each);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(seg);
                self.line(&line, each);
                line.clear();
                self.partial = line;
            }
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The end of the stream: the last line may lack its `\n`.
    pub fn finish(mut self, each: &mut impl FnMut(u64, &[u8])) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, each);
        }
    }

    fn line(&mut self, raw: &[u8], each: &mut impl FnMut(u64, &[u8])) {
        self.seen += 1;
        if let Some(line) = content(raw, self.seen == 1) {
            each(self.seen, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` in pieces of every size and checks the lines found
    /// are always `expected` (line number, content).
    fn check(input: &str, expected: &[(u64, &str)]) {
        for piece in 1..=input.len().max(1) {
            let mut s = Splitter::new();
            let mut got: Vec<(u64, String)> = Vec::new();
            let mut each = |n: u64, l: &[u8]| got.push((n, String::from_utf8(l.to_vec()).unwrap()));
            for p in input.as_bytes().chunks(piece) {
                s.push(p, &mut each);
            }
            s.finish(&mut each);
            let want: Vec<(u64, String)> = expected.iter().map(|(n, l)| (*n, (*l).to_owned())).collect();
            assert_eq!(got, want, "{input:?} in pieces of {piece}");
        }
        let whole: Vec<(u64, &[u8])> = raw_lines(input.as_bytes())
            .enumerate()
            .filter_map(|(i, l)| content(l, i == 0).map(|c| (i as u64 + 1, c)))
            .collect();
        let want: Vec<(u64, &[u8])> = expected.iter().map(|(n, l)| (*n, l.as_bytes())).collect();
        assert_eq!(whole, want, "{input:?} as one buffer");
    }

    #[test]
    fn the_line_rule() {
        check("", &[]);
        check("a", &[(1, "a")]);
        check("a\n", &[(1, "a")]);
        check("a\r\nb\r\n", &[(1, "a"), (2, "b")]);
        check("a\n\n \t\r\nb", &[(1, "a"), (4, "b")]);
        check("\u{feff}a\nb", &[(1, "a"), (2, "b")]);
        check("\u{feff}\na", &[(2, "a")]);
        check("a\n\u{feff}b", &[(1, "a"), (2, "\u{feff}b")]);
        check("\r\n\r\n", &[]);
        check(" a \n", &[(1, " a ")]);
    }
}
