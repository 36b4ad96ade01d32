//! Streaming, typed reading of `.jsonl.gz` / `.jsonl` record files and of dataset directories.
//!
//! A malformed line is an error naming the file and the 1-based line; the reader then stops (it
//! never guesses past corrupt input). Lines are bounded by [`ReaderOptions::max_line_bytes`] so a
//! corrupt or hostile file cannot make the reader buffer unbounded memory. Source names are checked
//! before they become file names, so `--sources ../../x` cannot escape the dataset directory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::manifest::{check_source_name, Manifest, MANIFEST_FILE};
use crate::{DataError, Record};

/// Default longest accepted line: 16 MiB (the shared data's longest line is ~120 kB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Limits for reading record files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// A line longer than this (bytes, without the newline) is an error.
    pub max_line_bytes: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Iterator over the records of one file. Yields `Err` once for the first bad line, then ends.
pub struct RecordReader {
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    line: u64,
    buf: Vec<u8>,
    opts: ReaderOptions,
    /// When set, each record's `source` must equal it (the file's source name).
    expected_source: Option<String>,
    done: bool,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl RecordReader {
    /// Opens `path`; gzip is detected by its magic bytes, so the extension does not matter.
    pub fn open(path: &Path, opts: ReaderOptions) -> Result<Self, DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::new(File::open(path).map_err(io_err)?);
        let is_gzip = file.fill_buf().map_err(io_err)?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn BufRead + Send> = if is_gzip {
            Box::new(BufReader::new(MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        Ok(Self::from_reader(path, input, opts))
    }

    /// Reads records from any buffered input; `path` is what errors name.
    pub fn from_reader(path: &Path, input: Box<dyn BufRead + Send>, opts: ReaderOptions) -> Self {
        Self {
            path: path.to_path_buf(),
            input,
            line: 0,
            buf: Vec::new(),
            opts,
            expected_source: None,
            done: false,
        }
    }

    /// Requires every record's `source` field to be `source` (used for per-source files).
    pub fn expect_source(mut self, source: &str) -> Self {
        self.expected_source = Some(source.to_string());
        self
    }

    /// Reads the next line into `self.buf` (without the newline), enforcing the length limit.
    /// Returns false at end of input.
    fn read_line(&mut self) -> Result<bool, DataError> {
        self.buf.clear();
        self.line += 1;
        let mut saw_any = false;
        loop {
            let available = self.input.fill_buf().map_err(|source| DataError::Read {
                path: self.path.clone(),
                line: self.line,
                source,
            })?;
            if available.is_empty() {
                return Ok(saw_any);
            }
            saw_any = true;
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if self.buf.len() + chunk.len() > self.opts.max_line_bytes {
                return Err(DataError::LineTooLong {
                    path: self.path.clone(),
                    line: self.line,
                    max_bytes: self.opts.max_line_bytes,
                });
            }
            self.buf.extend_from_slice(chunk);
            let consumed = chunk.len() + usize::from(found_newline);
            self.input.consume(consumed);
            if found_newline {
                return Ok(true);
            }
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>, DataError> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            if self.line == 1 && self.buf.starts_with(UTF8_BOM) {
                self.buf.drain(..UTF8_BOM.len()); // editors on Windows write one
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines (e.g. a trailing newline) carry no record
            }
            let record: Record =
                serde_json::from_slice(&self.buf).map_err(|source| DataError::Json {
                    path: self.path.clone(),
                    line: self.line,
                    source,
                })?;
            let invalid = |reason| DataError::InvalidRecord {
                path: self.path.clone(),
                line: self.line,
                reason,
            };
            record.validate().map_err(invalid)?;
            if let Some(expected) = &self.expected_source {
                if &record.source != expected {
                    return Err(invalid(format!(
                        "record source {:?} differs from the file's source {expected:?}",
                        record.source
                    )));
                }
            }
            return Ok(Some(record));
        }
    }
}

impl Iterator for RecordReader {
    type Item = Result<Record, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A dataset directory: `manifest.json` plus one `<source>.jsonl.gz` (or `.jsonl`) per source.
#[derive(Debug, Clone)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    opts: ReaderOptions,
}

impl Dataset {
    /// Opens `dir` and reads its manifest.
    pub fn open(dir: &Path) -> Result<Self, DataError> {
        let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            opts: ReaderOptions::default(),
        })
    }

    /// Replaces the reader limits.
    pub fn with_options(mut self, opts: ReaderOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// All source names of the manifest, sorted.
    pub fn source_names(&self) -> Vec<String> {
        self.manifest.sources.keys().cloned().collect()
    }

    /// `requested` if given (each checked against the manifest; repeats dropped), else all sources.
    pub fn resolve_sources<S: AsRef<str>>(
        &self,
        requested: Option<&[S]>,
    ) -> Result<Vec<String>, DataError> {
        let Some(names) = requested else {
            return Ok(self.source_names());
        };
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = n.as_ref();
            check_source_name(n)?;
            self.manifest.source(n, &self.manifest_path())?;
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    /// The data file of `source`: `<source>.jsonl.gz`, else `<source>.jsonl`.
    pub fn source_path(&self, source: &str) -> Result<PathBuf, DataError> {
        check_source_name(source)?;
        self.manifest.source(source, &self.manifest_path())?;
        for ext in ["jsonl.gz", "jsonl"] {
            let path = self.dir.join(format!("{source}.{ext}"));
            if path.is_file() {
                return Ok(path);
            }
        }
        Err(DataError::MissingSourceFile {
            name: source.to_string(),
            dir: self.dir.clone(),
        })
    }

    /// Streams the records of one source.
    pub fn records(&self, source: &str) -> Result<RecordReader, DataError> {
        let path = self.source_path(source)?;
        Ok(RecordReader::open(&path, self.opts)?.expect_source(source))
    }

    /// Streams the records of several sources, one after the other, in the given order.
    pub fn records_of<'a, S: AsRef<str>>(
        &'a self,
        sources: &'a [S],
    ) -> impl Iterator<Item = Result<Record, DataError>> + 'a {
        sources
            .iter()
            .flat_map(move |s| match self.records(s.as_ref()) {
                Ok(reader) => Box::new(reader) as Box<dyn Iterator<Item = _>>,
                Err(e) => Box::new(std::iter::once(Err(e))),
            })
    }

    /// Reads `sources` and keeps the records that have every member of `pool` (others counted).
    pub fn select_pool<S: AsRef<str>>(
        &self,
        sources: &[S],
        pool: &crate::Pool,
    ) -> Result<crate::PoolSelection, DataError> {
        pool.select(self.records_of(sources))
    }

    /// Raw scores of a pool record scaled to 0–100 with its source's `score_range`.
    pub fn scaled_scores(&self, record: &crate::PoolRecord) -> Result<Vec<f64>, DataError> {
        let info = self
            .manifest
            .source(&record.source, &self.manifest_path())?;
        Ok(crate::labels::scaled_scores(
            &record.scores(),
            info.score_range,
        ))
    }

    /// Reads all records of `sources` into memory (stops at the first error).
    pub fn read_all<S: AsRef<str>>(&self, sources: &[S]) -> Result<Vec<Record>, DataError> {
        self.records_of(sources).collect()
    }
}

/// Reads a whole record file (`.jsonl.gz` or `.jsonl`) with default limits.
pub fn read_records(path: &Path) -> Result<Vec<Record>, DataError> {
    RecordReader::open(path, ReaderOptions::default())?.collect()
}

/// Makes any `Read` a record source, e.g. for tests or stdin.
pub fn reader_from<R: Read + Send + 'static>(
    path: &Path,
    input: R,
    opts: ReaderOptions,
) -> RecordReader {
    RecordReader::from_reader(path, Box::new(BufReader::new(input)), opts)
}
