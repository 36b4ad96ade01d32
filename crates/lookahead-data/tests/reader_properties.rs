//! Property-style robustness of the dataset record reader (`reader_from`, the function the
//! `dataset_reader` fuzz target drives) on thousands of mutated files, plain and gzip-compressed,
//! and on corrupt gzip streams: records or exactly one error, never a panic; the line limit holds.
#![cfg(test)]

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use lookahead_data::{reader_from, DataError, ReaderOptions};

/// A small deterministic mutator (xorshift64*), so the property tests need no extra crates and
/// every failure is reproducible from its seed.
struct Mutator(u64);

impl Mutator {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Applies 1 to 8 random edits: byte flips, inserted bytes or tokens, deletions,
    /// duplications and truncation.
    fn mutate(&mut self, input: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = self.below(v.len() + 1);
            match self.below(7) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 => v.insert(at, self.next() as u8),
                2 => {
                    let t = tokens[self.below(tokens.len())];
                    v.splice(at..at, t.iter().copied());
                }
                3 if !v.is_empty() => {
                    let end = (at + self.below(16)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                4 if !v.is_empty() => {
                    let start = self.below(v.len());
                    let end = (start + self.below(64)).min(v.len());
                    let chunk = v[start..end].to_vec();
                    v.splice(at..at, chunk);
                }
                5 => v.truncate(at),
                _ => {
                    let t = tokens[self.below(tokens.len())];
                    let end = (at + t.len()).min(v.len());
                    v.splice(at..end, t.iter().copied());
                }
            }
        }
        v
    }
}

const SEED: &str = concat!(
    r#"{"id": "a-1", "source": "A", "prompt": "p1", "responses": {"m1": {"text": "x", "score": 1.0}, "m2": {"text": "y", "score": 0.0}}}"#,
    "\n",
    r#"{"id": "a-2", "source": "A", "prompt": "p2", "responses": {"m1": {"text": "x", "score": 0.0}}, "reference": {"answer": "42"}}"#,
    "\n",
);

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"1e999",
    b"NaN",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\\ud800",
    b"\"score\": ",
    b"\"responses\": {}",
    b"\"id\": \"a-1\", ",
    b"\x1f\x8b",
    b"\0",
];

const OPTS: ReaderOptions = ReaderOptions {
    max_line_bytes: 4096,
};

/// Reads everything; returns (records, errors).
fn drain<R: std::io::Read + Send + 'static>(input: R) -> (usize, usize) {
    let (mut records, mut errors) = (0, 0);
    for item in reader_from(Path::new("prop.jsonl"), input, OPTS).take(100_000) {
        match item {
            Ok(_) => records += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
    }
    assert!(errors <= 1, "the reader stops at its first error");
    (records, errors)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn mutated_files_never_panic_plain_or_gzip() {
    let mut m = Mutator::new(0x5eed_0004);
    let (mut clean, mut failed) = (0, 0);
    for i in 0..3000 {
        let data = m.mutate(SEED.as_bytes(), TOKENS);
        let plain = drain(std::io::Cursor::new(data.clone()));
        if i % 3 == 0 {
            assert_eq!(
                drain(MultiGzDecoder::new(std::io::Cursor::new(gzip(&data)))),
                plain,
                "gzip and plain read the same"
            );
        }
        if plain.1 == 0 {
            clean += 1;
        } else {
            failed += 1;
        }
    }
    assert!(
        clean > 20 && failed > 1000,
        "clean {clean}, failed {failed}"
    );
}

#[test]
fn corrupt_gzip_streams_are_one_error() {
    let mut m = Mutator::new(0x5eed_0005);
    let good = gzip(SEED.as_bytes());
    let mut errors = 0;
    for _ in 0..2000 {
        let data = m.mutate(&good, TOKENS);
        errors += drain(MultiGzDecoder::new(std::io::Cursor::new(data))).1;
    }
    assert!(errors > 500, "{errors} corrupt streams reported");
}

#[test]
fn oversize_lines_are_an_error_without_buffering_them() {
    // 64 MiB of one line, streamed: the reader must stop at its 4 KiB limit.
    let endless = std::io::repeat(b'x').take(64 << 20);
    let mut reader = reader_from(Path::new("big.jsonl"), endless, OPTS);
    match reader.next() {
        Some(Err(DataError::LineTooLong { .. })) => {}
        other => panic!("want a line-length error, got {other:?}"),
    }
    assert!(reader.next().is_none());
}
