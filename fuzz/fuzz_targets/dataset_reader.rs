//! The dataset record reader (`lookahead_data::reader_from`) on arbitrary bytes, read plain and
//! through gzip (the fuzz input gzip-compressed, and the raw input as a corrupt gzip stream):
//! records or one error, never a panic, and never more than one error.
#![no_main]

use std::io::Write;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use lookahead_data::{reader_from, ReaderOptions};

fn drain<R: std::io::Read + Send + 'static>(input: R) {
    // A small line limit so oversize lines are explored too.
    let opts = ReaderOptions {
        max_line_bytes: 4096,
    };
    let mut errors = 0;
    for item in reader_from(Path::new("fuzz.jsonl"), input, opts).take(10_000) {
        if item.is_err() {
            errors += 1;
        }
    }
    assert!(errors <= 1, "the reader stops after its first error");
}

fuzz_target!(|data: &[u8]| {
    drain(std::io::Cursor::new(data.to_vec()));
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    if enc.write_all(data).is_ok() {
        if let Ok(gz) = enc.finish() {
            drain(MultiGzDecoder::new(std::io::Cursor::new(gz)));
        }
    }
    drain(MultiGzDecoder::new(std::io::Cursor::new(data.to_vec())));
});
